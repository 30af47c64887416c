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

// The tolerance a step must meet for its results, by storage type: fp16 keeps 11
// significant bits, bf16 8, and the layer's intermediates are rounded to them several times.
double check_tolerance(DType dtype);

// Compares out, dx and all 12 gradients; prints one line each with its error and the
// tolerance (to `log`, which may be NULL). *max_err gets the largest error; returns 1 if
// every tensor is within the tolerance, else 0.
int compare_results(const LayerConfig *cfg, const LayerResults *got, const LayerResults *ref,
                    double tolerance, FILE *log, double *max_err);

#ifdef __cplusplus
}
#endif

#endif  // COMMON_CORE_TOLERANCE_H
