// The GPU exercises' entry points. The signatures are fixed - the graded tests
// (tests/exercises/*_gpu_test.c, tests/exercises/linear_cublaslt_test.c) call them - and the
// bodies are yours: one file per exercise in exercises/ (docs/exercises.md lists them).
//
// Conventions, the same for all five:
//   - 16-bit values are fp16 (IEEE half): `fp16_t` is CUDA's __half in CUDA code and its bit
//     pattern (uint16_t) in C, where the tests convert with common/core/half.h.
//   - Tensors are row-major and contiguous; every pointer is a device pointer from cudaMalloc
//     (256-byte aligned); sizes are any positive values unless stated (the tests use ragged
//     ones: rows and columns that are not multiples of a warp, a block or a tile).
//   - A launcher runs on the default stream and returns without waiting: the test synchronises
//     and reports a launch or kernel error by name.
//   - Outputs must be overwritten: the tests fill them with NaN (0xff bytes) before the call.
//   - Arithmetic in fp32 (statistics, accumulators, GELU, softmax), storage in fp16.
#ifndef EXERCISES_GPU_EXERCISES_H
#define EXERCISES_GPU_EXERCISES_H

#include <stdint.h>

#include "common/fp8/fp8_format.h"

#ifdef __CUDACC__
#include <cuda_fp16.h>
typedef __half fp16_t;
#else
typedef uint16_t fp16_t;
#endif

#ifdef __cplusplus
extern "C" {
#endif

// ---- layernorm_forward_gpu (chapter 02): exercises/layernorm_forward_gpu.cu ----------------
// For each row r of x [rows, cols]:
//   mean[r] = (1/cols) sum_c x[r, c]
//   rstd[r] = 1 / sqrt((1/cols) sum_c (x[r, c] - mean[r])^2 + eps)   (biased variance)
//   y[r, c] = (x[r, c] - mean[r]) * rstd[r] * gamma[c] + beta[c]
// x, gamma [cols], beta [cols], y: fp16; mean, rstd [rows]: fp32 (saved for the backward).
void ex_layernorm_forward(const fp16_t *x, const fp16_t *gamma, const fp16_t *beta, fp16_t *y, float *mean,
                          float *rstd, int rows, int cols, float eps);

// ---- bias_gelu_gpu (chapter 03): exercises/bias_gelu_gpu.cu --------------------------------
// What FC1's GEMM epilogue does in step 03 (CUBLASLT_EPILOGUE_GELU_AUX_BIAS), as one kernel:
//   pre[r, c] = x[r, c] + bias[c]                 (GELU's input, which the backward needs)
//   y[r, c]   = GELU(pre[r, c]),  GELU(z) = 0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3)))
// x, pre, y [rows, cols], bias [cols]: fp16. GELU is computed from the fp32 sum, not from the
// rounded pre.
void ex_bias_gelu(const fp16_t *x, const fp16_t *bias, fp16_t *pre, fp16_t *y, int rows, int cols);

// ---- attention_tile_gpu (chapter 04): exercises/attention_tile_gpu.cu ----------------------
// Attention forward, one (batch, head) per `heads` entry, with the online softmax:
//   o[h, i, :] = sum_j softmax_j(s[h, i, :]) v[h, j, :],  s[h, i, j] = q[h, i, :] . k[h, j, :] / sqrt(head_dim)
//   lse[h, i]  = log(sum_j exp(s[h, i, j]))   (natural log: what the backward pass needs)
// causal = 1: query i sees keys j <= i only. q, k, v, o [heads, seq, head_dim]: fp16;
// lse [heads, seq]: fp32. 1 <= head_dim <= 64.
void ex_attention_forward(const fp16_t *q, const fp16_t *k, const fp16_t *v, fp16_t *o, float *lse, int heads,
                          int seq, int head_dim, int causal);

// ---- fp8_cast_gpu (chapter 05): exercises/fp8_cast_gpu.cu ----------------------------------
// The cast of delayed scaling (common/fp8/fp8_recipe.h):
//   out[i] = the FP8 code of x[i] * (*scale) in `format` (round to nearest even, saturate to
//            +-largest: CUDA's __nv_cvt_float_to_fp8(v, __NV_SATFINITE, ...))
//   *amax  = max(*amax, max_i |x[i]|)   (of x itself, unscaled; *amax >= 0 on entry)
// x [n]: fp16; out [n]: FP8 codes; scale, amax: device pointers to one float each (the scale
// comes from the previous steps' amax history, so it stays on the GPU).
void ex_fp8_cast(const fp16_t *x, uint8_t *out, int64_t n, const float *scale, float *amax, Fp8Format format);

// ---- linear_cublaslt (chapter 02): exercises/linear_cublaslt.c -----------------------------
// A Linear's forward on cuBLASLt, the bias added in the GEMM's epilogue:
//   y[t, o] = sum_i x[t, i] weight[o, i] + bias[o]
// x [tokens, in_features], weight [out_features, in_features] (PyTorch's layout), bias
// [out_features], y [tokens, out_features]: fp16; products accumulated in fp32.
// in_features and out_features are multiples of 8 (16-byte rows, as cuBLASLt's fp16 kernels
// want them); tokens is anything. Returns CUBLAS_STATUS_SUCCESS (0) or the first failing
// call's status, with nothing left allocated.
int ex_linear_forward(const fp16_t *x, const fp16_t *weight, const fp16_t *bias, fp16_t *y, int tokens,
                      int in_features, int out_features);

#ifdef __cplusplus
}
#endif

#endif  // EXERCISES_GPU_EXERCISES_H
