// Inputs for testing --check's tolerance rule (common/core/tolerance.h), shared by the CPU
// test of the rule and the GPU test of the steps.
#ifndef TESTS_CHECK_CHECK_INPUTS_H
#define TESTS_CHECK_CHECK_INPUTS_H

#include "common/core/layer.h"

// The small preset at `dtype`, no dropout (dropout would make every token differ).
LayerConfig check_test_config(DType dtype);

// A valid input on which rounding errors add up coherently: repeated tokens with opposite
// gradients. Every even token is one row r, every odd token the same row nudged by
// COHERENT_NUDGE_STEPS steps of the dtype in each element, and dy alternates g, -g. A weight gradient sums dy_t (x) a_t
// over tokens, so here it is (tokens / 2) g (x) (a_even - a_odd): the difference of two
// activations that differ by about one rounding step - and every pair of tokens rounds the
// same way, so the rounding errors do not average out, they add up. out and dx stay
// well-conditioned. Weights: random (layer_params_init_random), rounded to the dtype.
#define COHERENT_NUDGE_STEPS 32
void make_coherent_rounding_input(const LayerConfig *cfg, uint64_t seed, LayerParams *params, LayerInputs *in);

// The usual random input of --check (random weights, x and dy ~ U(0, 1)), rounded.
void make_random_input(const LayerConfig *cfg, uint64_t seed, LayerParams *params, LayerInputs *in);

#endif  // TESTS_CHECK_CHECK_INPUTS_H
