// A LayerNorm whose rows are split across tensor-parallel ranks (mode "exact" of step 07's
// Linear -> LayerNorm -> Linear block): each rank holds `cols` of the row's `full_cols`
// features, and the statistics are made whole by all-reducing two floats per row.
//
//   forward   1. split_ln_partial_stats      stats[r] = (sum z, sum z^2) over this rank's slice
//             -- all-reduce stats (2 floats per row, fp32) --
//             2. split_ln_forward_apply      mean, rstd from the totals; y = xhat gamma + beta
//   backward  3. split_ln_partial_grad_sums  sums[r] = (sum g, sum g xhat), g = dy gamma
//             -- all-reduce sums --
//             4. split_ln_backward_apply     dz = rstd (g - sum g / F - xhat sum(g xhat) / F)
//             5. split_ln_param_grads        dgamma = sum_rows dy xhat, dbeta = sum_rows dy
//                                            (local: each rank owns its features' gamma, beta)
//
// z, y, dy, dz are [rows, cols] in `dtype`; gamma, beta, dgamma, dbeta [cols] in `dtype`;
// stats, sums [rows, 2] and mean, rstd [rows] fp32. Statistics in fp32.
#ifndef STEPS_07_TENSOR_PARALLEL_SPLIT_LAYERNORM_H
#define STEPS_07_TENSOR_PARALLEL_SPLIT_LAYERNORM_H

#include <stdint.h>

#include "common/core/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

void split_ln_partial_stats(const void *z, int64_t rows, int cols, float *stats, DType dtype);
void split_ln_forward_apply(const void *z, const void *gamma, const void *beta, const float *stats,
                            int64_t rows, int cols, int full_cols, float eps, void *y, float *mean,
                            float *rstd, DType dtype);
void split_ln_partial_grad_sums(const void *dy, const void *z, const void *gamma, const float *mean,
                                const float *rstd, int64_t rows, int cols, float *sums, DType dtype);
void split_ln_backward_apply(const void *dy, const void *z, const void *gamma, const float *mean,
                             const float *rstd, const float *sums, int64_t rows, int cols,
                             int full_cols, void *dz, DType dtype);
void split_ln_param_grads(const void *dy, const void *z, const float *mean, const float *rstd,
                          int64_t rows, int cols, void *dgamma, void *dbeta, DType dtype);

#ifdef __cplusplus
}
#endif

#endif  // STEPS_07_TENSOR_PARALLEL_SPLIT_LAYERNORM_H
