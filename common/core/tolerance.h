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

// Compares out, dx and all 12 gradients; prints one line each with its error, the tolerance
// and the noise (to `log`, which may be NULL). noisy: the noise run's results, or NULL (the
// floor alone). *max_err gets the largest error; returns 1 if every tensor is within its
// tolerance, else 0.
int compare_results_with_noise(const LayerConfig *cfg, const LayerResults *got, const LayerResults *ref,
                               const LayerResults *noisy, double floor, FILE *log, double *max_err);
// The same with no noise run: every tensor against `tolerance`.
int compare_results(const LayerConfig *cfg, const LayerResults *got, const LayerResults *ref,
                    double tolerance, FILE *log, double *max_err);

#ifdef __cplusplus
}
#endif

#endif  // COMMON_CORE_TOLERANCE_H
