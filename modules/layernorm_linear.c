#include "modules/layernorm_linear.h"

#include "common/gpu/gpu.h"

void layernorm_linear_init(LayerNormLinear *m, int in, int out, int64_t max_tokens, float eps,
                           const LayerNormLinearTensors *p, DType dtype) {
    layernorm_init(&m->ln, in, max_tokens, eps, p->layer_norm_weight, p->layer_norm_bias, dtype);
    linear_init(&m->linear, in, out, p->weight, p->bias, dtype);
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

void layernorm_linear_load_params(LayerNormLinear *m, const LayerNormLinearTensors *p) {
    layernorm_load_params(&m->ln, p->layer_norm_weight, p->layer_norm_bias);
    linear_load_params(&m->linear, p->weight, p->bias);
}

void layernorm_linear_read_grads(const LayerNormLinear *m, const LayerNormLinearTensors *g) {
    layernorm_read_grads(&m->ln, g->layer_norm_weight, g->layer_norm_bias);
    linear_read_grads(&m->linear, g->weight, g->bias);
}

void layernorm_linear_backward(LayerNormLinear *m, const void *dy, const void *dresidual, void *dx,
                               int64_t tokens) {
    linear_backward(&m->linear, dy, m->d_ln_out, tokens);
    layernorm_backward(&m->ln, m->d_ln_out, dresidual, dx, tokens);
}

LayerNormLinearTensors layernorm_linear_qkv_of_layer(const LayerParams *p) {
    float *const *w = p->tensor;
    return (LayerNormLinearTensors){w[P_LN1_WEIGHT], w[P_LN1_BIAS], w[P_QKV_WEIGHT], w[P_QKV_BIAS]};
}
