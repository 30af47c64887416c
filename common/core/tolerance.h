// Comparing results with the reference: norm-wise relative error ||a - ref|| / ||ref||.
#ifndef COMMON_CORE_TOLERANCE_H
#define COMMON_CORE_TOLERANCE_H

#include <stdint.h>
#include <stdio.h>

#include "common/core/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

// ||a - ref||_2 / ||ref||_2 in double; NaN or inf anywhere in a gives +inf, so it never passes.
// If ref is all zero, returns ||a||_2.
double rel_error(const float *a, const float *ref, int64_t n);

// The tolerance floor a step must meet for its results, by storage type: fp16 keeps 11
// significant bits, bf16 8, and the layer's intermediates are rounded to them several times.
// On the random inputs of --check's small preset the GPU steps stay 5-10x below it
// (docs/results.md). It is the whole tolerance where no noise run is made (FP8 steps, which
// have their own floor, and the kernels' unit tests).
double check_tolerance(DType dtype);

// --check's rule. A correct GPU step differs from the float CPU reference by the rounding of
// its 16-bit storage; on most inputs that is far below the floor, but on some valid inputs
// the rounding errors add up coherently (repeated tokens, say: every copy of a row rounds the
// same way, and a gradient that sums their differences is mostly rounding) and a correct step
// lands far above it. So the CPU reference is run a second time with every tensor the GPU
// stores rounded to the dtype where the GPU rounds it (RefQuantizer's store hook,
// reference/reference.h), and each tensor's error in that run against the float reference
// is the rounding noise of the dtype on this input. A tensor passes if
//     ||gpu - ref|| / ||ref||  <=  max(floor, CHECK_NOISE_FACTOR * noise).
// Why 2: the GPU rounds the same tensors at (almost) the same values, so its rounding error is
// of the same size as the noise run's - equal where the errors are coherent, and within a few
// percent for independent errors (a norm over thousands of elements concentrates); what the
// noise run does not model (the attention's probabilities rounded inside the kernel, float
// instead of double accumulation, fused kernels that skip a rounding) is of the same order or
// smaller, so a correct step stays within 2x. A wrong kernel - a wrong scale, a dropped term,
// a wrong index - makes an error of order 1e-2 to 1, many times the noise wherever the input
// is well-conditioned (tests/check/check_rule_test.c plants them).
#define CHECK_NOISE_FACTOR 2.0
double noise_tolerance(double floor, double noise);

// What the noise run cannot see: a sum that cancels. A gradient summed over tokens whose terms
// cancel (repeated tokens with opposite output gradients, say) is zero up to rounding; the
// noise run's round-to-nearest is symmetric (fl(-v) = -fl(v)), so there the cancellation stays
// exact and the noise is ~0 or meaningless, while a correct GPU, whose paired terms come out of
// different paths, is left with a rounding-sized residue: a huge relative error against a
// reference of ~0 (the H200, bf16 step 06u, grad.qkv_projection.bias: 7.6e7). Such a tensor is
// checked in absolute terms against the standard bound of a rounded sum (Higham, "Accuracy and
// Stability of Numerical Algorithms", 2nd ed., sec. 4.2 and 3.5):
//     |fl(sum_t a_t b_t) - sum_t a_t b_t|  <=  gamma_n sum_t |a_t b_t|,
// element by element, where S = sum_t |a_t b_t| is the magnitude run's (RefQuantizer's
// grad_magnitudes, reference/reference.h). On the GPU each operand is stored in the dtype (a
// rounding of at most u, the unit roundoff: 2^-11 fp16, 2^-8 bf16), the product and the float
// accumulation add (1 + u_f32)^n - 1 <= n u_f32 (< 0.1 u at --check's sizes), and the result
// is stored (u |sum| <= u S): at most about 3u S with exact operands. The operands carry the
// error of the ops before them too (of a few u where they are well-conditioned, as out and
// dx are), so a correct GPU stays within
//     ||gpu - ref||_2  <=  CHECK_SUM_ROUNDINGS x u x ||S||_2,
// with room (tests/check/check_rule_test.c: the emulated GPUs stay below 1 u ||S||). The
// absolute check is used only where the tensor cancels - ||ref|| <= that bound, i.e. the
// reference is no larger than the rounding error its sum may carry - so every well-conditioned
// tensor keeps the rule above: at --check's random input ||S|| / ||ref|| stays below 13, far
// from the 256 (fp16) and 32 (bf16) where the absolute check takes over. A wrong kernel still
// fails where the tensor cancels if its error exceeds the bound, and always through out, dx
// and the tensors that do not cancel.
#define CHECK_SUM_ROUNDINGS 8.0

// The unit roundoff u of the dtype (round to nearest): 2^-11 for fp16, 2^-8 for bf16.
double unit_roundoff(DType dtype);

// Compares out, dx and all 12 gradients; prints one line each with its error, the tolerance
// and the noise (to `log`, which may be NULL). noisy: the noise run's results, or NULL (the
// floor alone). magnitudes: the magnitude run's results (only its gradients are read), or NULL
// (no absolute check for cancelling sums). *max_err gets the largest relative error of a
// tensor that does not cancel; returns 1 if every tensor is within its tolerance, else 0.
int compare_results_with_noise(const LayerConfig *cfg, const LayerResults *got, const LayerResults *ref,
                               const LayerResults *noisy, const LayerResults *magnitudes, double floor, FILE *log,
                               double *max_err);
// The same with no noise run: every tensor against `tolerance`.
int compare_results(const LayerConfig *cfg, const LayerResults *got, const LayerResults *ref,
                    double tolerance, FILE *log, double *max_err);

#ifdef __cplusplus
}
#endif

#endif  // COMMON_CORE_TOLERANCE_H
