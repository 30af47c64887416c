// LayerNormMLP: y = FC2(GELU(FC1(LayerNorm(x)))) (+ residual) as one module.
//
// The fusions, all in cuBLASLt epilogues:
//   forward   FC1's GEMM adds the bias, applies GELU and keeps GELU's input (its "aux"
//             output) for backward: no separate bias and GELU kernels, no extra pass;
//             FC2's GEMM adds its bias and, optionally, the residual (beta = 1).
//   backward  the weight-gradient GEMMs sum the bias gradients (BGRADB); the LayerNorm
//             backward adds the residual's gradient in the same pass. GELU' can run in
//             FC2's input-gradient epilogue too (DGELU_BGRAD, `dgelu_in_epilogue`), but on
//             the H100 with cuBLAS 13.1 that epilogue made the GEMM 0.8 ms slower at the
//             quickstart's shape, far more than one elementwise pass costs (0.3 ms), so by
//             default GELU' is a separate kernel and FC1's weight-gradient GEMM sums db1.
#ifndef COMMON_MODULES_LAYERNORM_MLP_H
#define COMMON_MODULES_LAYERNORM_MLP_H

#include "common/modules/layernorm.h"
#include "common/modules/linear.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    LayerNorm ln;
    Linear fc1, fc2;
    int dgelu_in_epilogue;  // 1: GELU' and db1 in the DGELU_BGRAD epilogue (default 0)
    void *ln_out;     // [tokens, hidden]
    void *fc1_pre;    // [tokens, ffn] FC1's output before GELU (the epilogue's aux)
    void *gelu_out;   // [tokens, ffn]
    void *d_fc1_pre;  // [tokens, ffn]
    void *d_ln_out;   // [tokens, hidden]
} LayerNormMLP;

void layernorm_mlp_init(LayerNormMLP *m, int hidden, int ffn, int64_t max_tokens, float eps,
                        const float *gamma, const float *beta, const float *w1, const float *b1,
                        const float *w2, const float *b2, DType dtype);
void layernorm_mlp_free(LayerNormMLP *m);
// y = FC2(GELU(FC1(LN(x)))) + residual (residual may be NULL).
void layernorm_mlp_forward(LayerNormMLP *m, const void *x, void *y, int64_t tokens, const void *residual);
// dx = d/dx of the above applied to dy, + dresidual (may be NULL or alias dx).
void layernorm_mlp_backward(LayerNormMLP *m, const void *dy, const void *dresidual, void *dx,
                            int64_t tokens);

#ifdef __cplusplus
}
#endif

#endif  // COMMON_MODULES_LAYERNORM_MLP_H
