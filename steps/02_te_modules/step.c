// Step 02: the same layer, rebuilt from Transformer-Engine-style modules.
//
// As in TE's quickstart (te.Linear, te.LayerNorm swapped in for torch.nn's), only the
// building blocks change: `Linear` runs on cuBLASLt with the bias in the GEMM's epilogue
// (and the bias gradient in the weight-gradient GEMM's epilogue), `LayerNorm` uses the fast
// vectorised kernels. GELU, dropout and the residual adds are still separate kernels, and
// attention is still step 01's unfused one: the step's time should be about step 01's.
#include <stdlib.h>

#include "common/core/errors.h"
#include "common/gpu/gpu.h"
#include "modules/layernorm.h"
#include "modules/linear.h"
#include "common/core/philox.h"
#include "kernels/naive/dropout.h"
#include "kernels/naive/gelu.h"
#include "kernels/naive/naive_attention.h"
#include "kernels/naive/residual.h"
#include "steps/02_te_modules/step02.h"

typedef struct {
    LayerConfig cfg;
    LayerNorm ln1, ln2;
    Linear qkv, proj, fc1, fc2;
    NaiveAttention attn;
    void *ln1_out, *qkv_out, *ctx, *proj_out, *proj_dropped, *y, *ln2_out, *fc1_out, *gelu_out, *out;
    void *d_gelu, *d_fc1, *d_ln2, *d_y, *d_proj, *d_ctx, *d_qkv, *d_ln1, *dx;
} Step02;

static void *create(const LayerConfig *c, const LayerParams *p) {
    Step02 *s = xcalloc(1, sizeof *s);
    s->cfg = *c;
    const int h = c->hidden, f = c->ffn;
    const int64_t t = layer_tokens(c);
    float *const *w = p->tensor;
    layernorm_init(&s->ln1, h, t, c->eps, w[P_LN1_WEIGHT], w[P_LN1_BIAS], c->dtype);
    layernorm_init(&s->ln2, h, t, c->eps, w[P_LN2_WEIGHT], w[P_LN2_BIAS], c->dtype);
    linear_init(&s->qkv, h, 3 * h, w[P_QKV_WEIGHT], w[P_QKV_BIAS], c->dtype);
    linear_init(&s->proj, h, h, w[P_PROJ_WEIGHT], w[P_PROJ_BIAS], c->dtype);
    linear_init(&s->fc1, h, f, w[P_FC1_WEIGHT], w[P_FC1_BIAS], c->dtype);
    linear_init(&s->fc2, f, h, w[P_FC2_WEIGHT], w[P_FC2_BIAS], c->dtype);
    naive_attention_init(&s->attn, c);
    size_t e = dtype_bytes(c->dtype);
    void **hs[] = {&s->ln1_out, &s->ctx, &s->proj_out, &s->proj_dropped, &s->y, &s->ln2_out, &s->out,
                   &s->d_ln2, &s->d_y, &s->d_proj, &s->d_ctx, &s->d_ln1, &s->dx};
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) *hs[i] = dev_alloc((size_t)t * h * e);
    void **fs[] = {&s->fc1_out, &s->gelu_out, &s->d_gelu, &s->d_fc1};
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++) *fs[i] = dev_alloc((size_t)t * f * e);
    s->qkv_out = dev_alloc((size_t)t * 3 * h * e);
    s->d_qkv = dev_alloc((size_t)t * 3 * h * e);
    return s;
}

static void train_step(void *state, const void *x, const void *dout, uint64_t step) {
    Step02 *s = state;
    const LayerConfig *c = &s->cfg;
    const int64_t t = layer_tokens(c), n = t * c->hidden, nf = t * c->ffn;
    const DType dt = c->dtype;
    const uint64_t attn_off = dropout_offset(step, DROPOUT_SITE_ATTENTION);
    const uint64_t hid_off = dropout_offset(step, DROPOUT_SITE_HIDDEN);
    // Forward.
    layernorm_forward(&s->ln1, x, s->ln1_out, t);
    linear_forward(&s->qkv, s->ln1_out, s->qkv_out, t, NULL);
    naive_attention_forward(&s->attn, s->qkv_out, s->ctx, attn_off);
    linear_forward(&s->proj, s->ctx, s->proj_out, t, NULL);
    dropout_forward(s->proj_out, n, c->hidden_dropout, c->seed, hid_off, s->proj_dropped, dt);
    residual_add(x, s->proj_dropped, n, s->y, dt);
    layernorm_forward(&s->ln2, s->y, s->ln2_out, t);
    linear_forward(&s->fc1, s->ln2_out, s->fc1_out, t, NULL);
    gelu_forward(s->fc1_out, nf, s->gelu_out, dt);
    linear_forward(&s->fc2, s->gelu_out, s->out, t, NULL);
    residual_add(s->out, s->y, n, s->out, dt);
    // Backward.
    linear_backward(&s->fc2, dout, s->d_gelu, t);
    gelu_backward(s->d_gelu, s->fc1_out, nf, s->d_fc1, dt);
    linear_backward(&s->fc1, s->d_fc1, s->d_ln2, t);
    layernorm_backward(&s->ln2, s->d_ln2, NULL, s->d_y, t);
    residual_add(s->d_y, dout, n, s->d_y, dt);
    dropout_backward(s->d_y, n, c->hidden_dropout, c->seed, hid_off, s->d_proj, dt);
    linear_backward(&s->proj, s->d_proj, s->d_ctx, t);
    naive_attention_backward(&s->attn, s->qkv_out, s->d_ctx, s->d_qkv, attn_off);
    linear_backward(&s->qkv, s->d_qkv, s->d_ln1, t);
    layernorm_backward(&s->ln1, s->d_ln1, NULL, s->dx, t);
    residual_add(s->dx, s->d_y, n, s->dx, dt);
}

static void read_results(void *state, LayerResults *r) {
    Step02 *s = state;
    int64_t n = layer_tokens(&s->cfg) * s->cfg.hidden;
    float **g = r->grad.tensor;
    dev_download(r->out, s->out, n, s->cfg.dtype);
    dev_download(r->dx, s->dx, n, s->cfg.dtype);
    layernorm_read_grads(&s->ln1, g[P_LN1_WEIGHT], g[P_LN1_BIAS]);
    layernorm_read_grads(&s->ln2, g[P_LN2_WEIGHT], g[P_LN2_BIAS]);
    linear_read_grads(&s->qkv, g[P_QKV_WEIGHT], g[P_QKV_BIAS]);
    linear_read_grads(&s->proj, g[P_PROJ_WEIGHT], g[P_PROJ_BIAS]);
    linear_read_grads(&s->fc1, g[P_FC1_WEIGHT], g[P_FC1_BIAS]);
    linear_read_grads(&s->fc2, g[P_FC2_WEIGHT], g[P_FC2_BIAS]);
}

static void destroy(void *state) {
    Step02 *s = state;
    layernorm_free(&s->ln1);
    layernorm_free(&s->ln2);
    linear_free(&s->qkv);
    linear_free(&s->proj);
    linear_free(&s->fc1);
    linear_free(&s->fc2);
    naive_attention_free(&s->attn);
    void *bufs[] = {s->ln1_out, s->qkv_out, s->ctx, s->proj_out, s->proj_dropped, s->y, s->ln2_out,
                    s->fc1_out, s->gelu_out, s->out, s->d_gelu, s->d_fc1, s->d_ln2, s->d_y,
                    s->d_proj, s->d_ctx, s->d_qkv, s->d_ln1, s->dx};
    dev_free_all(bufs, COUNT_OF(bufs));
    free(s);
}

static const char *unsupported(const LayerConfig *c) { return layernorm_unsupported(c->hidden); }

const StepOps STEP_02_TE_MODULES = {
    .id = "02_te_modules",
    .title = "TE-style modules",
    .whats_new = "Linear on cuBLASLt (bias in epilogue), fast LayerNorm",
    .unsupported = unsupported,
    .create = create,
    .train_step = train_step,
    .read_results = read_results,
    .destroy = destroy,
};
