// Step 03: coarser modules, so that kernels can be fused across op boundaries.
//
// As in TE's quickstart (te.LayerNormLinear for LN1 + QKV, te.LayerNormMLP for the MLP):
//   - FC1's bias and GELU run in FC1's GEMM epilogue, which also keeps GELU's input;
//   - in backward, FC2's input-gradient GEMM applies GELU' and sums FC1's bias gradient;
//   - FC2's GEMM adds the residual (beta = 1) and the LayerNorm backward kernels add the
//     residual branches' gradients: no separate residual-add passes.
// Bytes that no longer move (per step, [tokens, ffn] tensors are 4x the hidden-sized ones):
// the separate GELU forward (read fc1, write gelu) and backward (read d_gelu and fc1, write
// d_fc1), and three residual adds. Attention is still step 01's unfused one.
#include <stdlib.h>

#include "common/core/errors.h"
#include "common/gpu/gpu.h"
#include "modules/layernorm.h"
#include "modules/layernorm_linear.h"
#include "modules/layernorm_mlp.h"
#include "modules/linear.h"
#include "common/core/philox.h"
#include "kernels/naive/dropout.h"
#include "kernels/naive/naive_attention.h"
#include "kernels/naive/residual.h"
#include "steps/03_fused_modules/step03.h"

typedef struct {
    LayerConfig cfg;
    LayerNormLinear ln_qkv;
    Linear proj;
    LayerNormMLP mlp;
    NaiveAttention attn;
    void *qkv_out, *ctx, *proj_out, *proj_dropped, *y, *out;
    void *d_y, *d_proj, *d_ctx, *d_qkv, *dx;
} Step03;

static void *create(const LayerConfig *c, const LayerParams *p) {
    Step03 *s = xcalloc(1, sizeof *s);
    s->cfg = *c;
    const int h = c->hidden, f = c->ffn;
    const int64_t t = layer_tokens(c);
    const LayerNormLinearTensors ln_qkv = layernorm_linear_qkv_of_layer(p);
    const LayerNormMLPTensors mlp = layernorm_mlp_of_layer(p);
    layernorm_linear_init(&s->ln_qkv, h, 3 * h, t, c->eps, &ln_qkv, c->dtype);
    linear_init(&s->proj, h, h, p->tensor[P_PROJ_WEIGHT], p->tensor[P_PROJ_BIAS], c->dtype);
    layernorm_mlp_init(&s->mlp, h, f, t, c->eps, &mlp, c->dtype);
    naive_attention_init(&s->attn, c);
    size_t e = dtype_bytes(c->dtype);
    void **hs[] = {&s->ctx, &s->proj_out, &s->proj_dropped, &s->y, &s->out, &s->d_y, &s->d_proj,
                   &s->d_ctx, &s->dx};
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) *hs[i] = dev_alloc((size_t)t * h * e);
    s->qkv_out = dev_alloc((size_t)t * 3 * h * e);
    s->d_qkv = dev_alloc((size_t)t * 3 * h * e);
    return s;
}

static void train_step(void *state, const void *x, const void *dout, uint64_t step) {
    Step03 *s = state;
    const LayerConfig *c = &s->cfg;
    const int64_t t = layer_tokens(c), n = t * c->hidden;
    const DType dt = c->dtype;
    const uint64_t attn_off = dropout_offset(step, DROPOUT_SITE_ATTENTION);
    const uint64_t hid_off = dropout_offset(step, DROPOUT_SITE_HIDDEN);
    // Forward.
    layernorm_linear_forward(&s->ln_qkv, x, s->qkv_out, t);
    naive_attention_forward(&s->attn, s->qkv_out, s->ctx, attn_off);
    linear_forward(&s->proj, s->ctx, s->proj_out, t, NULL);
    dropout_forward(s->proj_out, n, c->hidden_dropout, c->seed, hid_off, s->proj_dropped, dt);
    residual_add(x, s->proj_dropped, n, s->y, dt);
    layernorm_mlp_forward(&s->mlp, s->y, s->out, t, s->y);  // out = y + MLP(LN2(y))
    // Backward: the residuals' gradients are added inside the LayerNorm backward kernels.
    layernorm_mlp_backward(&s->mlp, dout, dout, s->d_y, t);
    dropout_backward(s->d_y, n, c->hidden_dropout, c->seed, hid_off, s->d_proj, dt);
    linear_backward(&s->proj, s->d_proj, s->d_ctx, t);
    naive_attention_backward(&s->attn, s->qkv_out, s->d_ctx, s->d_qkv, attn_off);
    layernorm_linear_backward(&s->ln_qkv, s->d_qkv, s->d_y, s->dx, t);
}

static void read_results(void *state, LayerResults *r) {
    Step03 *s = state;
    int64_t n = layer_tokens(&s->cfg) * s->cfg.hidden;
    dev_download(r->out, s->out, n, s->cfg.dtype);
    dev_download(r->dx, s->dx, n, s->cfg.dtype);
    const LayerNormLinearTensors ln_qkv = layernorm_linear_qkv_of_layer(&r->grad);
    const LayerNormMLPTensors mlp = layernorm_mlp_of_layer(&r->grad);
    layernorm_linear_read_grads(&s->ln_qkv, &ln_qkv);
    linear_read_grads(&s->proj, r->grad.tensor[P_PROJ_WEIGHT], r->grad.tensor[P_PROJ_BIAS]);
    layernorm_mlp_read_grads(&s->mlp, &mlp);
}

static void destroy(void *state) {
    Step03 *s = state;
    layernorm_linear_free(&s->ln_qkv);
    linear_free(&s->proj);
    layernorm_mlp_free(&s->mlp);
    naive_attention_free(&s->attn);
    void *bufs[] = {s->qkv_out, s->ctx, s->proj_out, s->proj_dropped, s->y, s->out, s->d_y, s->d_proj,
                    s->d_ctx, s->d_qkv, s->dx};
    dev_free_all(bufs, COUNT_OF(bufs));
    free(s);
}

static const char *unsupported(const LayerConfig *c) { return layernorm_unsupported(c->hidden); }

const StepOps STEP_03_FUSED_MODULES = {
    .id = "03_fused_modules",
    .title = "fused modules",
    .whats_new = "LayerNormLinear, LayerNormMLP: GELU/bias/residual fused",
    .unsupported = unsupported,
    .create = create,
    .train_step = train_step,
    .read_results = read_results,
    .destroy = destroy,
};
