#include "modules/transformer_layer.h"

#include "common/core/errors.h"
#include "common/gpu/gpu.h"
#include "common/core/philox.h"
#include "kernels/attention/attention.h"
#include "kernels/fused/elementwise.h"
#include "kernels/layernorm/fast_layernorm.h"

const char *transformer_layer_unsupported(const LayerConfig *cfg) {
    const AttentionProblem attn = attention_layer_problem(cfg);
    const char *why = attention_unsupported(&attn);
    return why ? why : layernorm_fast_unsupported(cfg->hidden);
}

void transformer_layer_init(TransformerLayer *t, const LayerConfig *c, const LayerParams *p) {
    const char *why = transformer_layer_unsupported(c);
    if (why) fail_user("TransformerLayer: %s", why);
    t->cfg = *c;
    t->attn = attention_layer_problem(c);
    const int h = c->hidden, f = c->ffn;
    const int64_t n = layer_tokens(c);
    const LayerNormLinearTensors ln_qkv = layernorm_linear_qkv_of_layer(p);
    const LayerNormMLPTensors mlp = layernorm_mlp_of_layer(p);
    layernorm_linear_init(&t->ln_qkv, h, 3 * h, n, c->eps, &ln_qkv, c->dtype);
    linear_init(&t->proj, h, h, p->tensor[P_PROJ_WEIGHT], p->tensor[P_PROJ_BIAS], c->dtype);
    layernorm_mlp_init(&t->mlp, h, f, n, c->eps, &mlp, c->dtype);
    size_t e = dtype_bytes(c->dtype);
    t->qkv = dev_alloc((size_t)n * 3 * h * e);
    t->d_qkv = dev_alloc((size_t)n * 3 * h * e);
    void **hs[] = {&t->ctx, &t->proj_out, &t->y, &t->d_y, &t->d_proj, &t->d_ctx};
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) *hs[i] = dev_alloc((size_t)n * h * e);
    t->lse = dev_alloc((size_t)c->batch * c->heads * c->seq * sizeof(float));
    t->attn_workspace = dev_alloc(attention_backward_workspace_bytes(&t->attn));
    t->overlap_wgrad = 0;
}

void transformer_layer_set_overlap_wgrad(TransformerLayer *t, int on) {
    layernorm_mlp_set_wgrad_stream(&t->mlp, on);
    t->overlap_wgrad = on != 0;
}

void transformer_layer_free(TransformerLayer *t) {
    layernorm_linear_free(&t->ln_qkv);
    linear_free(&t->proj);
    layernorm_mlp_free(&t->mlp);
    void *bufs[] = {t->qkv, t->d_qkv, t->ctx, t->proj_out, t->y, t->d_y, t->d_proj, t->d_ctx, t->lse,
                    t->attn_workspace};
    dev_free_all(bufs, COUNT_OF(bufs));
}

void transformer_layer_forward(TransformerLayer *t, const void *x, void *out, uint64_t step) {
    const LayerConfig *c = &t->cfg;
    const int64_t n = layer_tokens(c);
    layernorm_linear_forward(&t->ln_qkv, x, t->qkv, n);
    const AttentionDropout attn_dropout = attention_layer_dropout(c, step);
    attention_forward(&t->attn, &attn_dropout, t->qkv, t->ctx, t->lse);
    // The projection's GEMM without its bias: bias, dropout and the residual add follow in
    // one elementwise pass.
    const void *proj_bias = linear_forward_return_bias(&t->proj, t->ctx, t->proj_out, n);
    bias_dropout_add_forward(t->proj_out, proj_bias, x, t->y, n, c->hidden, c->hidden_dropout, c->seed,
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
    const AttentionDropout attn_dropout = attention_layer_dropout(c, step);
    attention_backward(&t->attn, &attn_dropout, t->qkv, t->ctx, t->d_ctx, t->lse, t->d_qkv, t->attn_workspace);
    layernorm_linear_backward(&t->ln_qkv, t->d_qkv, t->d_y, dx, n);
    // With overlap_wgrad the MLP's wgrads ran on a side stream from the MLP backward on; as
    // late as possible, the default stream waits for them, so that the step's end (the
    // driver's event, a check's read_grads, the next forward over ln_out and gelu_out, a
    // caller's new dout) comes after them. Nothing above wrote what they read: dout is only
    // read here (the MLP's dresidual), and ln_out, gelu_out and d_fc1_pre belong to the MLP.
    layernorm_mlp_wait_for_wgrads(&t->mlp);
}

void transformer_layer_read_grads(const TransformerLayer *t, LayerParams *g) {
    const LayerNormLinearTensors ln_qkv = layernorm_linear_qkv_of_layer(g);
    const LayerNormMLPTensors mlp = layernorm_mlp_of_layer(g);
    layernorm_linear_read_grads(&t->ln_qkv, &ln_qkv);
    linear_read_grads(&t->proj, g->tensor[P_PROJ_WEIGHT], g->tensor[P_PROJ_BIAS]);
    layernorm_mlp_read_grads(&t->mlp, &mlp);
}

void transformer_layer_load_params(TransformerLayer *t, const LayerParams *p) {
    const LayerNormLinearTensors ln_qkv = layernorm_linear_qkv_of_layer(p);
    const LayerNormMLPTensors mlp = layernorm_mlp_of_layer(p);
    layernorm_linear_load_params(&t->ln_qkv, &ln_qkv);
    linear_load_params(&t->proj, p->tensor[P_PROJ_WEIGHT], p->tensor[P_PROJ_BIAS]);
    layernorm_mlp_load_params(&t->mlp, &mlp);
}
