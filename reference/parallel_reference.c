#include "reference/parallel_reference.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/errors.h"
#include "common/core/philox.h"
#include "reference/reference.h"

// ---- the unfused parallel layer -------------------------------------------------------------
typedef struct {
    float *a, *mean, *rstd, *qkv, *probs, *ctx, *h1, *g, *z;
} ParallelSaved;

static float *buf(int64_t n) { return xcalloc((size_t)n, sizeof(float)); }

static void parallel_forward(const LayerConfig *c, const LayerParams *p, const float *x, uint64_t step,
                             const RefQuantizer *q, ParallelSaved *s, float *out) {
    const int64_t T = layer_tokens(c);
    const int h = c->hidden, f = c->ffn;
    float *const *w = p->tensor;
    s->a = buf(T * h), s->mean = buf(T), s->rstd = buf(T), s->qkv = buf(T * 3 * h);
    s->probs = buf((int64_t)c->batch * c->heads * c->seq * c->seq), s->ctx = buf(T * h);
    s->h1 = buf(T * f), s->g = buf(T * f), s->z = buf(T * h);
    ref_layernorm_forward(x, w[P_LN1_WEIGHT], w[P_LN1_BIAS], T, h, c->eps, s->a, s->mean, s->rstd);
    ref_store(q, "ln1_out", s->a, T * h);
    // Attention branch.
    ref_linear_forward_quantized(q, s->a, w[P_QKV_WEIGHT], w[P_QKV_BIAS], T, h, 3 * h, s->qkv);
    ref_store(q, "qkv", s->qkv, T * 3 * h);
    ref_attention_forward(s->qkv, c->seq, c->batch, c->heads, layer_head_dim(c), c->attn_dropout, c->causal, c->seed,
                          dropout_offset(step, DROPOUT_SITE_ATTENTION), s->ctx, s->probs);
    ref_store(q, "ctx", s->ctx, T * h);
    // MLP branch, on the same a.
    ref_linear_forward_quantized(q, s->a, w[P_FC1_WEIGHT], w[P_FC1_BIAS], T, h, f, s->h1);
    ref_store(q, "fc1", s->h1, T * f);
    ref_gelu_forward(s->h1, T * f, s->g);
    ref_store(q, "gelu", s->g, T * f);
    // z = Attn + MLP: both output projections, both biases.
    float *m = buf(T * h);
    ref_linear_forward_quantized(q, s->ctx, w[P_PROJ_WEIGHT], w[P_PROJ_BIAS], T, h, h, s->z);
    ref_linear_forward_quantized(q, s->g, w[P_FC2_WEIGHT], w[P_FC2_BIAS], T, f, h, m);
    for (int64_t i = 0; i < T * h; i++) s->z[i] += m[i];
    free(m);
    ref_store(q, "proj", s->z, T * h);
    ref_dropout_forward(s->z, T * h, c->hidden_dropout, c->seed, dropout_offset(step, DROPOUT_SITE_HIDDEN), out);
    for (int64_t i = 0; i < T * h; i++) out[i] += x[i];
    ref_store(q, "out", out, T * h);
}

static void saved_free(ParallelSaved *s) {
    float *all[] = {s->a, s->mean, s->rstd, s->qkv, s->probs, s->ctx, s->h1, s->g, s->z};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
}

void ref_parallel_forward(const LayerConfig *c, const LayerParams *p, const float *x, uint64_t step, float *out) {
    ParallelSaved s;
    parallel_forward(c, p, x, step, NULL, &s, out);
    saved_free(&s);
}

void ref_parallel_train_step_quantized(const LayerConfig *c, const LayerParams *p, const LayerInputs *in,
                                       uint64_t step, const RefQuantizer *q, LayerResults *r) {
    const int64_t T = layer_tokens(c);
    const int h = c->hidden, f = c->ffn;
    float *const *w = p->tensor;
    float **gw = r->grad.tensor;
    ParallelSaved s;
    parallel_forward(c, p, in->x, step, q, &s, r->out);
    float *dz = buf(T * h), *dctx = buf(T * h), *dg = buf(T * f), *dh1 = buf(T * f), *dqkv = buf(T * 3 * h);
    float *da = buf(T * h), *da2 = buf(T * h);
    ref_dropout_backward(in->dy, T * h, c->hidden_dropout, c->seed, dropout_offset(step, DROPOUT_SITE_HIDDEN), dz);
    ref_store(q, "d_proj", dz, T * h);
    ref_linear_backward_quantized(q, dz, s.ctx, w[P_PROJ_WEIGHT], T, h, h, dctx, gw[P_PROJ_WEIGHT], gw[P_PROJ_BIAS]);
    ref_store(q, "d_ctx", dctx, T * h);
    ref_linear_backward_quantized(q, dz, s.g, w[P_FC2_WEIGHT], T, f, h, dg, gw[P_FC2_WEIGHT], gw[P_FC2_BIAS]);
    ref_store(q, "d_gelu", dg, T * f);
    ref_gelu_backward(dg, s.h1, T * f, dh1);
    ref_store(q, "d_fc1", dh1, T * f);
    ref_linear_backward_quantized(q, dh1, s.a, w[P_FC1_WEIGHT], T, h, f, da, gw[P_FC1_WEIGHT], gw[P_FC1_BIAS]);
    ref_attention_backward(dctx, s.qkv, s.probs, c->seq, c->batch, c->heads, layer_head_dim(c), c->attn_dropout,
                           c->causal, c->seed, dropout_offset(step, DROPOUT_SITE_ATTENTION), dqkv);
    ref_store(q, "d_qkv", dqkv, T * 3 * h);
    ref_linear_backward_quantized(q, dqkv, s.a, w[P_QKV_WEIGHT], T, h, 3 * h, da2, gw[P_QKV_WEIGHT], gw[P_QKV_BIAS]);
    for (int64_t i = 0; i < T * h; i++) da[i] += da2[i];  // a feeds both branches
    ref_store(q, "d_ln1", da, T * h);
    ref_layernorm_backward_quantized(q, da, in->x, w[P_LN1_WEIGHT], s.mean, s.rstd, T, h, r->dx, gw[P_LN1_WEIGHT], gw[P_LN1_BIAS]);
    for (int64_t i = 0; i < T * h; i++) r->dx[i] += in->dy[i];  // the residual
    ref_store(q, "dx", r->dx, T * h);
    memset(gw[P_LN2_WEIGHT], 0, (size_t)h * sizeof(float));   // ln2 is not used
    memset(gw[P_LN2_BIAS], 0, (size_t)h * sizeof(float));
    for (int i = 0; i < NUM_PARAMS; i++) {
        char name[64];
        snprintf(name, sizeof name, "grad.%s", PARAM_NAMES[i]);
        ref_store(q, name, gw[i], param_numel(c, i));
    }
    float *tmp[] = {dz, dctx, dg, dh1, dqkv, da, da2};
    for (size_t i = 0; i < sizeof tmp / sizeof tmp[0]; i++) free(tmp[i]);
    saved_free(&s);
}

void ref_parallel_train_step(const LayerConfig *c, const LayerParams *p, const LayerInputs *in, uint64_t step,
                             LayerResults *r) {
    ref_parallel_train_step_quantized(c, p, in, step, NULL, r);
}

// ---- the fused layout -------------------------------------------------------------------------
void fused_parallel_alloc(const LayerConfig *c, FusedParallelParams *f) {
    int64_t h = c->hidden, n_in = 3 * h + c->ffn, k_out = h + c->ffn;
    f->ln_weight = buf(h), f->ln_bias = buf(h);
    f->w_in = buf(n_in * h), f->b_in = buf(n_in);
    f->w_out = buf(h * k_out), f->b_out = buf(h);
}

void fused_parallel_free(FusedParallelParams *f) {
    float *all[] = {f->ln_weight, f->ln_bias, f->w_in, f->b_in, f->w_out, f->b_out};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
}

// fuse_parallel_params and unfuse_parallel_params: the graded exercise "fused_weights"
// (docs/exercises.md).

void parallel_grads_from_fused(const LayerConfig *c, const FusedParallelParams *g, LayerParams *out) {
    unfuse_parallel_params(c, g, out);
    memcpy(out->tensor[P_FC2_BIAS], g->b_out, (size_t)c->hidden * sizeof(float));
    memset(out->tensor[P_LN2_WEIGHT], 0, (size_t)c->hidden * sizeof(float));
    memset(out->tensor[P_LN2_BIAS], 0, (size_t)c->hidden * sizeof(float));
}

// Copies columns [col0, col0 + width) of a [rows, row_len] matrix into a [rows, width] one
// (or back, if `to_view` is 0): what the GPU does with strides, the CPU does with copies.
static void columns(float *matrix, int64_t rows, int row_len, int col0, int width, float *view, int to_view) {
    for (int64_t r = 0; r < rows; r++) {
        float *m = matrix + r * row_len + col0, *v = view + r * width;
        if (to_view) memcpy(v, m, (size_t)width * sizeof(float));
        else memcpy(m, v, (size_t)width * sizeof(float));
    }
}

void ref_parallel_fused_train_step(const LayerConfig *c, const FusedParallelParams *p, const LayerInputs *in,
                                   uint64_t step, float *out, float *dx, FusedParallelParams *g) {
    const int64_t T = layer_tokens(c);
    const int h = c->hidden, ffn = c->ffn, n_in = 3 * h + ffn, k_out = h + ffn, d = layer_head_dim(c);
    const uint64_t attn_off = dropout_offset(step, DROPOUT_SITE_ATTENTION), hid_off = dropout_offset(step, DROPOUT_SITE_HIDDEN);
    float *a = buf(T * h), *mean = buf(T), *rstd = buf(T), *in_out = buf(T * n_in), *qkv = buf(T * 3 * h);
    float *h1 = buf(T * ffn), *cat = buf(T * k_out), *ctx = buf(T * h), *gl = buf(T * ffn), *z = buf(T * h);
    float *probs = buf((int64_t)c->batch * c->heads * c->seq * c->seq);
    // Forward: one input linear, split; attention and GELU into one [T, h + ffn] tensor;
    // one output linear that sums the branches.
    ref_layernorm_forward(in->x, p->ln_weight, p->ln_bias, T, h, c->eps, a, mean, rstd);
    ref_linear_forward(a, p->w_in, p->b_in, T, h, n_in, in_out);
    columns(in_out, T, n_in, 0, 3 * h, qkv, 1);
    columns(in_out, T, n_in, 3 * h, ffn, h1, 1);
    ref_attention_forward(qkv, c->seq, c->batch, c->heads, d, c->attn_dropout, c->causal, c->seed, attn_off, ctx, probs);
    ref_gelu_forward(h1, T * ffn, gl);
    columns(cat, T, k_out, 0, h, ctx, 0);
    columns(cat, T, k_out, h, ffn, gl, 0);
    ref_linear_forward(cat, p->w_out, p->b_out, T, k_out, h, z);
    ref_dropout_forward(z, T * h, c->hidden_dropout, c->seed, hid_off, out);
    for (int64_t i = 0; i < T * h; i++) out[i] += in->x[i];
    // Backward, mirrored.
    float *dz = buf(T * h), *dcat = buf(T * k_out), *dctx = buf(T * h), *dgl = buf(T * ffn), *dh1 = buf(T * ffn);
    float *dqkv = buf(T * 3 * h), *din = buf(T * n_in), *da = buf(T * h);
    ref_dropout_backward(in->dy, T * h, c->hidden_dropout, c->seed, hid_off, dz);
    ref_linear_backward(dz, cat, p->w_out, T, k_out, h, dcat, g->w_out, g->b_out);
    columns(dcat, T, k_out, 0, h, dctx, 1);
    columns(dcat, T, k_out, h, ffn, dgl, 1);
    ref_attention_backward(dctx, qkv, probs, c->seq, c->batch, c->heads, d, c->attn_dropout, c->causal, c->seed,
                           attn_off, dqkv);
    ref_gelu_backward(dgl, h1, T * ffn, dh1);
    columns(din, T, n_in, 0, 3 * h, dqkv, 0);
    columns(din, T, n_in, 3 * h, ffn, dh1, 0);
    ref_linear_backward(din, a, p->w_in, T, h, n_in, da, g->w_in, g->b_in);
    ref_layernorm_backward(da, in->x, p->ln_weight, mean, rstd, T, h, dx, g->ln_weight, g->ln_bias);
    for (int64_t i = 0; i < T * h; i++) dx[i] += in->dy[i];
    float *all[] = {a, mean, rstd, in_out, qkv, h1, cat, ctx, gl, z, probs, dz, dcat, dctx, dgl, dh1, dqkv, din, da};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
}
