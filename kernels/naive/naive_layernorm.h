// LayerNorm over the last axis of a [rows, cols] tensor, forward and backward:
//   y = (x - mean) * rstd * gamma + beta,   rstd = 1 / sqrt(var + eps)
// Statistics are computed in fp32 and the forward saves them (fp32, one per row) so the
// backward does not recompute them. Tensors are in `dtype`, mean/rstd are float.
#ifndef KERNELS_NAIVE_NAIVE_LAYERNORM_H
#define KERNELS_NAIVE_NAIVE_LAYERNORM_H

#include <stdint.h>

#include "common/core/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

void naive_layernorm_forward(const void *x, const void *gamma, const void *beta, int64_t rows, int cols,
                       float eps, void *y, float *mean, float *rstd, DType dtype);

// Overwrites dx [rows, cols], dgamma [cols] and dbeta [cols].
void naive_layernorm_backward(const void *dy, const void *x, const void *gamma, const float *mean,
                        const float *rstd, int64_t rows, int cols, void *dx, void *dgamma,
                        void *dbeta, DType dtype);

#ifdef __cplusplus
}
#endif

#endif  // KERNELS_NAIVE_NAIVE_LAYERNORM_H
