#include "modules/layernorm_mlp.h"

#include "common/gpu/gpu.h"
#include "common/gpu/gpu_phase.h"
#include "modules/gemm.h"
#include "kernels/fused/elementwise.h"

void layernorm_mlp_init(LayerNormMLP *m, int hidden, int ffn, int64_t max_tokens, float eps,
                        const float *gamma, const float *beta, const float *w1, const float *b1,
                        const float *w2, const float *b2, DType dtype) {
    m->gelu_backward = GELU_BACKWARD_IN_EPILOGUE;
    layernorm_init(&m->ln, hidden, max_tokens, eps, gamma, beta, dtype);
    linear_init(&m->fc1, hidden, ffn, w1, b1, dtype);
    linear_init(&m->fc2, ffn, hidden, w2, b2, dtype);
    size_t e = dtype_bytes(dtype);
    m->ln_out = dev_alloc((size_t)max_tokens * hidden * e);
    m->d_ln_out = dev_alloc((size_t)max_tokens * hidden * e);
    m->fc1_pre = dev_alloc((size_t)max_tokens * ffn * e);
    m->gelu_out = dev_alloc((size_t)max_tokens * ffn * e);
    m->d_fc1_pre = dev_alloc((size_t)max_tokens * ffn * e);
}

void layernorm_mlp_free(LayerNormMLP *m) {
    layernorm_free(&m->ln);
    linear_free(&m->fc1);
    linear_free(&m->fc2);
    void *bufs[] = {m->ln_out, m->d_ln_out, m->fc1_pre, m->gelu_out, m->d_fc1_pre};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) dev_free(bufs[i]);
}

void layernorm_mlp_forward(LayerNormMLP *m, const void *x, void *y, int64_t tokens, const void *residual) {
    layernorm_forward(&m->ln, x, m->ln_out, tokens);
    // FC1 + bias + GELU in one GEMM; the pre-activation goes to fc1_pre for backward.
    linear_gemm_forward(&m->fc1, m->ln_out, m->gelu_out, tokens, GEMM_EPILOGUE_GELU_AUX_BIAS, m->fc1.bias,
                        m->fc1_pre, NULL);
    m->fc1.saved_x = m->ln_out;
    // FC2 + bias (+ residual).
    linear_forward(&m->fc2, m->gelu_out, y, tokens, residual);
}

void layernorm_mlp_backward(LayerNormMLP *m, const void *dy, const void *dresidual, void *dx,
                            int64_t tokens) {
    // FC2: dW2 and db2 (BGRADB), then d(fc1_pre) = (dy W2) * GELU'(fc1_pre).
    linear_gemm_backward_weight(&m->fc2, dy, m->gelu_out, tokens);
    const int ffn = m->fc1.out;
    switch (m->gelu_backward) {
        case GELU_BACKWARD_SEPARATE_PASS:
            linear_gemm_backward_input(&m->fc2, dy, m->d_fc1_pre, tokens, GEMM_EPILOGUE_NONE, NULL, NULL);
            // (16-byte accesses: step 01's one-element-per-thread gelu_backward took 0.47 ms here.)
            gelu_backward_strided(m->d_fc1_pre, ffn, m->fc1_pre, ffn, m->d_fc1_pre, ffn, tokens, ffn, m->fc1.dtype);
            break;
        case GELU_BACKWARD_IN_EPILOGUE:
            linear_gemm_backward_input(&m->fc2, dy, m->d_fc1_pre, tokens, GEMM_EPILOGUE_DGELU, NULL, m->fc1_pre);
            break;
        case GELU_BACKWARD_IN_EPILOGUE_WITH_BGRAD:
            linear_gemm_backward_input(&m->fc2, dy, m->d_fc1_pre, tokens, GEMM_EPILOGUE_DGELU_BGRAD, m->fc1.dbias,
                                       m->fc1_pre);
            break;
    }
    // FC1: d(ln_out) and dW1 (+ db1 unless the epilogue above summed it).
    linear_gemm_backward_input(&m->fc1, m->d_fc1_pre, m->d_ln_out, tokens, GEMM_EPILOGUE_NONE, NULL, NULL);
    const int db1_summed = m->gelu_backward == GELU_BACKWARD_IN_EPILOGUE_WITH_BGRAD;
    Gemm wgrad = {.trans_a = 0, .trans_b = 1, .m = m->fc1.in, .n = m->fc1.out, .k = tokens,
                  .a = m->ln_out, .lda = m->fc1.in, .b = m->d_fc1_pre, .ldb = m->fc1.out,
                  .d = m->fc1.dweight, .ldd = m->fc1.in,
                  .epilogue = db1_summed ? GEMM_EPILOGUE_NONE : GEMM_EPILOGUE_BGRADB,
                  .bias = m->fc1.dbias, .dtype = m->fc1.dtype};
    GPU_PHASE(CAT_GEMM_WGRAD, gemm_run(&wgrad));
    layernorm_backward(&m->ln, m->d_ln_out, dresidual, dx, tokens);
}
