// Fast LayerNorm, forward and backward (steps 02 onwards).
//
// LayerNorm does almost no arithmetic per byte, so its speed is the speed at which it moves
// bytes. These kernels move each byte once:
//   - every thread loads 16 bytes at a time (8 fp16/bf16 values), coalesced across the warp;
//   - a row stays in registers between computing its statistics and normalising it
//     (the naive kernel of step 01 reads the row three times);
//   - backward reads x and dy once, writes dx once, and reduces dgamma/dbeta in two stages:
//     each block keeps float sums for its rows in registers and writes them once, then a
//     small kernel adds the blocks' partial sums.
// Statistics are float32 (mean and rstd saved for backward); rows must be multiples of 8
// elements and at most LAYERNORM_FAST_MAX_COLS (a thread holds at most 16 packs of 8 values in
// registers, and the forward has 128 threads a row); layernorm_fast_unsupported says so
// before any work, so that a configuration is refused when it is read, not at the first launch.
#ifndef KERNELS_LAYERNORM_FAST_LAYERNORM_H
#define KERNELS_LAYERNORM_FAST_LAYERNORM_H

#include <stddef.h>
#include <stdint.h>

#include "common/fp8/fp8_format.h"
#include "common/core/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LAYERNORM_FAST_MAX_COLS 16384

// NULL if the kernels take rows of `cols` values, else why not (naming cols and the limit).
const char *layernorm_fast_unsupported(int cols);

// y = (x - mean) * rstd * gamma + beta over rows of `cols`; writes mean and rstd [rows].
void layernorm_fast_forward(const void *x, const void *gamma, const void *beta, void *y, float *mean,
                            float *rstd, int64_t rows, int cols, float eps, DType dtype);

// The same, writing FP8 codes of y * (*scale) to y8 [rows, cols] instead of y, and folding
// max |y| into *amax (step 05: LayerNorm's output goes straight to the next GEMM's FP8 input).
void layernorm_fast_forward_fp8(const void *x, const void *gamma, const void *beta, uint8_t *y8, const float *scale,
                                float *amax, Fp8Format format, float *mean, float *rstd, int64_t rows, int cols,
                                float eps, DType dtype);

// Scratch the backward needs for its partial sums (float32).
size_t layernorm_fast_backward_workspace_bytes(int cols);

// NULL if layernorm_fast_backward can run rows of `cols` on this GPU, else a sentence saying
// why not. It keeps two rows each of x, dy and dresidual in shared memory (12 bytes a column),
// which must fit one block (gpu_max_smem_per_block()): up to cols of about 13,900 on an A100
// (163 KiB), 8,400 on RTX 30xx / 40xx, L4 and L40S (99 KiB), all 16384 on Hopper (227 KiB).
// The returned sentence is a static buffer, overwritten by the next call.
const char *layernorm_fast_backward_unsupported(int cols, DType dtype);

// dx = LayerNorm'(dy) (+ dresidual if not NULL: the gradient arriving through a residual
// connection, added in the same pass); dgamma, dbeta [cols] overwritten. Exits with
// layernorm_fast_backward_unsupported's sentence where the row does not fit.
void layernorm_fast_backward(const void *dy, const void *x, const void *gamma, const float *mean,
                             const float *rstd, const void *dresidual, void *dx, void *dgamma,
                             void *dbeta, void *workspace, int64_t rows, int cols, DType dtype);

#ifdef __cplusplus
}
#endif

#endif  // KERNELS_LAYERNORM_FAST_LAYERNORM_H
