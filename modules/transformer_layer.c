#include "modules/transformer_layer.h"

#include "common/core/errors.h"
#include "common/gpu/gpu.h"
#include "modules/gemm.h"
#include "common/core/philox.h"
#include "kernels/attention/flash_attention.h"
#include "kernels/fused/elementwise.h"
#include "kernels/layernorm/fast_layernorm.h"

const char *transformer_layer_unsupported(const LayerConfig *cfg) {
    const char *why = flash_attention_unsupported(layer_head_dim(cfg));
    return why ? why : layernorm_fast_unsupported(cfg->hidden);
}

void transformer_layer_init(TransformerLayer *t, const LayerConfig *c, const LayerParams *p) {
    const char *why = transformer_layer_unsupported(c);
    if (why) fail_user("TransformerLayer: %s", why);
    t->cfg = *c;
    const int h = c->hidden, f = c->ffn;
    const int64_t n = layer_tokens(c);
    float *const *w = p->tensor;
    layernorm_linear_init(&t->ln_qkv, h, 3 * h, n, c->eps, w[P_LN1_WEIGHT], w[P_LN1_BIAS], w[P_QKV_WEIGHT],
                          w[P_QKV_BIAS], c->dtype);
    linear_init(&t->proj, h, h, w[P_PROJ_WEIGHT], w[P_PROJ_BIAS], c->dtype);
    layernorm_mlp_init(&t->mlp, h, f, n, c->eps, w[P_LN2_WEIGHT], w[P_LN2_BIAS], w[P_FC1_WEIGHT], w[P_FC1_BIAS],
                       w[P_FC2_WEIGHT], w[P_FC2_BIAS], c->dtype);
    size_t e = dtype_bytes(c->dtype);
    t->qkv = dev_alloc((size_t)n * 3 * h * e);
    t->d_qkv = dev_alloc((size_t)n * 3 * h * e);
    void **hs[] = {&t->ctx, &t->proj_out, &t->y, &t->d_y, &t->d_proj, &t->d_ctx};
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) *hs[i] = dev_alloc((size_t)n * h * e);
    t->lse = dev_alloc((size_t)c->batch * c->heads * c->seq * sizeof(float));
    t->attn_scratch = dev_alloc(flash_attention_backward_scratch_bytes(c->seq, c->batch, c->heads, layer_head_dim(c)));
}

void transformer_layer_free(TransformerLayer *t) {
    layernorm_linear_free(&t->ln_qkv);
    linear_free(&t->proj);
    layernorm_mlp_free(&t->mlp);
    void *bufs[] = {t->qkv, t->d_qkv, t->ctx, t->proj_out, t->y, t->d_y, t->d_proj, t->d_ctx, t->lse,
                    t->attn_scratch};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) dev_free(bufs[i]);
}

void transformer_layer_forward(TransformerLayer *t, const void *x, void *out, uint64_t step) {
    const LayerConfig *c = &t->cfg;
    const int64_t n = layer_tokens(c);
    t->saved_x = x;
    layernorm_linear_forward(&t->ln_qkv, x, t->qkv, n);
    flash_attention_forward(t->qkv, t->ctx, t->lse, c->seq, c->batch, c->heads, layer_head_dim(c), c->dtype,
                            c->attn_dropout, c->causal, c->seed, dropout_offset(step, DROPOUT_SITE_ATTENTION));
    // The projection's GEMM without its bias: bias, dropout and the residual add follow in
    // one elementwise pass.
    linear_gemm_forward(&t->proj, t->ctx, t->proj_out, n, GEMM_EPILOGUE_NONE, NULL, NULL, NULL);
    t->proj.saved_x = t->ctx;
    bias_dropout_add_forward(t->proj_out, t->proj.bias, x, t->y, n, c->hidden, c->hidden_dropout, c->seed,
                             dropout_offset(step, DROPOUT_SITE_HIDDEN), c->dtype);
    layernorm_mlp_forward(&t->mlp, t->y, out, n, t->y);
}

void transformer_layer_backward(TransformerLayer *t, const void *dout, void *dx, uint64_t step) {
    const LayerConfig *c = &t->cfg;
    const int64_t n = layer_tokens(c);
    layernorm_mlp_backward(&t->mlp, dout, dout, t->d_y, n);  // d_y includes the residual's dout
    add_dropout_backward(t->d_y, NULL, NULL, t->d_proj, n * c->hidden, c->hidden_dropout, c->seed,
                         dropout_offset(step, DROPOUT_SITE_HIDDEN), c->dtype);
    linear_backward(&t->proj, t->d_proj, t->d_ctx, n);  // the bias gradient from BGRADB
    flash_attention_backward(t->qkv, t->ctx, t->d_ctx, t->lse, t->d_qkv, t->attn_scratch, c->seq, c->batch,
                             c->heads, layer_head_dim(c), c->dtype, c->attn_dropout, c->causal, c->seed,
                             dropout_offset(step, DROPOUT_SITE_ATTENTION));
    layernorm_linear_backward(&t->ln_qkv, t->d_qkv, t->d_y, dx, n);
}

void transformer_layer_read_grads(const TransformerLayer *t, LayerParams *g) {
    float **w = g->tensor;
    layernorm_read_grads(&t->ln_qkv.ln, w[P_LN1_WEIGHT], w[P_LN1_BIAS]);
    linear_read_grads(&t->ln_qkv.linear, w[P_QKV_WEIGHT], w[P_QKV_BIAS]);
    linear_read_grads(&t->proj, w[P_PROJ_WEIGHT], w[P_PROJ_BIAS]);
    layernorm_read_grads(&t->mlp.ln, w[P_LN2_WEIGHT], w[P_LN2_BIAS]);
    linear_read_grads(&t->mlp.fc1, w[P_FC1_WEIGHT], w[P_FC1_BIAS]);
    linear_read_grads(&t->mlp.fc2, w[P_FC2_WEIGHT], w[P_FC2_BIAS]);
}

void transformer_layer_load_params(TransformerLayer *t, const LayerParams *p) {
    float *const *w = p->tensor;
    layernorm_load_params(&t->ln_qkv.ln, w[P_LN1_WEIGHT], w[P_LN1_BIAS]);
    linear_load_params(&t->ln_qkv.linear, w[P_QKV_WEIGHT], w[P_QKV_BIAS]);
    linear_load_params(&t->proj, w[P_PROJ_WEIGHT], w[P_PROJ_BIAS]);
    layernorm_load_params(&t->mlp.ln, w[P_LN2_WEIGHT], w[P_LN2_BIAS]);
    linear_load_params(&t->mlp.fc1, w[P_FC1_WEIGHT], w[P_FC1_BIAS]);
    linear_load_params(&t->mlp.fc2, w[P_FC2_WEIGHT], w[P_FC2_BIAS]);
}
