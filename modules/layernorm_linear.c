#include "modules/layernorm_linear.h"

#include "common/gpu/gpu.h"

void layernorm_linear_init(LayerNormLinear *m, int in, int out, int64_t max_tokens, float eps,
                           const float *gamma, const float *beta, const float *weight,
                           const float *bias, DType dtype) {
    layernorm_init(&m->ln, in, max_tokens, eps, gamma, beta, dtype);
    linear_init(&m->linear, in, out, weight, bias, dtype);
    m->ln_out = dev_alloc((size_t)max_tokens * in * dtype_bytes(dtype));
    m->d_ln_out = dev_alloc((size_t)max_tokens * in * dtype_bytes(dtype));
}

void layernorm_linear_free(LayerNormLinear *m) {
    layernorm_free(&m->ln);
    linear_free(&m->linear);
    dev_free(m->ln_out);
    dev_free(m->d_ln_out);
}

const void *layernorm_linear_forward(LayerNormLinear *m, const void *x, void *y, int64_t tokens) {
    layernorm_forward(&m->ln, x, m->ln_out, tokens);
    linear_forward(&m->linear, m->ln_out, y, tokens, NULL);
    return m->ln_out;
}

void layernorm_linear_backward(LayerNormLinear *m, const void *dy, const void *dresidual, void *dx,
                               int64_t tokens) {
    linear_backward(&m->linear, dy, m->d_ln_out, tokens);
    layernorm_backward(&m->ln, m->d_ln_out, dresidual, dx, tokens);
}
