// FP8 matrix products on cuBLASLt (Hopper's tensor cores run them at twice the fp16 rate).
//
//   D [m x n] = a_scale_inv * b_scale_inv * A^T B  (+ bias[m])      column-major, as gemm.h
//
// A and B are FP8 (E4M3 or E5M2; not both E5M2), stored [k x m] and [k x n]: cuBLASLt's FP8
// products take only this "TN" layout, which is why step 05 needs transposed FP8 copies of
// activations and gradients for its weight-gradient products. The scales are device pointers
// (delayed scaling updates them on the GPU; each 16-byte aligned, as dev_alloc gives) and
// hold the inverse scales: FP8 data is x * scale,
// so the product is rescaled by 1 / (scale_a scale_b). D is fp16 or bf16.
//
// fast_accum: cuBLASLt's faster FP8 accumulation, which promotes partial sums to full float32
// less often. TE uses it for forward products and not for gradients: gradients (E5M2, 2
// mantissa bits) already carry little precision, and their sums over many tokens are where
// lost low bits would add up.
//
// Under gemm_set_deterministic(1) (modules/gemm.h) the algorithms are restricted as gemm.h's.
#ifndef MODULES_FP8_GEMM_H
#define MODULES_FP8_GEMM_H

#include <stdint.h>

#include "common/fp8/fp8_format.h"
#include "common/core/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int64_t m, n, k;
    const uint8_t *a;
    Fp8Format a_format;
    const float *a_scale_inv;
    const uint8_t *b;
    Fp8Format b_format;
    const float *b_scale_inv;
    void *d;
    int64_t ldd;
    DType out_dtype;
    const void *bias;  // [m] in out_dtype, or NULL
    int fast_accum;
} Fp8Gemm;

void fp8_gemm_run(const Fp8Gemm *g);

#ifdef __cplusplus
}
#endif

#endif  // MODULES_FP8_GEMM_H
