// Tensor parallelism simulated on the CPU: see tp_reference.h.
//
// The code is written the way the GPU program runs: every phase is a loop over the ranks
// ("each GPU does this on its own data"), and the phases are separated by
// tp_sim_all_reduce ("the GPUs exchange partial sums"). Nothing a rank computes reads
// another rank's buffers except through the all-reduce.
#include "reference/tp_reference.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/errors.h"
#include "common/core/philox.h"
#include "reference/reference.h"
#include "reference/tp_rank.h"

// ---- Which parameter is cut how --------------------------------------------------------------
TpSplit tp_param_split(int id) {
    switch (id) {
        case P_QKV_WEIGHT: case P_QKV_BIAS: case P_FC1_WEIGHT: case P_FC1_BIAS:
            return TP_SPLIT_ROWS;  // column-parallel: outputs (and their biases) are cut
        case P_PROJ_WEIGHT: case P_FC2_WEIGHT:
            return TP_SPLIT_COLS;  // row-parallel: inputs are cut
        default:
            return TP_REPLICATED;  // LayerNorms and the biases of row-parallel linears
    }
}

const char *tp_split_name(TpSplit s) {
    return s == TP_SPLIT_ROWS ? "rows" : s == TP_SPLIT_COLS ? "columns" : "replicated";
}

const char *tp_config_problem(const LayerConfig *c, int tp) {
    static char msg[256];
    if (tp < 1 || tp > TP_MAX_RANKS) {
        snprintf(msg, sizeof msg, "tensor-parallel size must be in 1..%d (got %d)", TP_MAX_RANKS, tp);
        return msg;
    }
    if (c->heads % tp != 0) {
        snprintf(msg, sizeof msg, "tensor-parallel size %d must divide the number of heads (%d): "
                 "each rank holds whole heads", tp, c->heads);
        return msg;
    }
    if (c->hidden % tp != 0) {  // implied by heads when hidden % heads == 0, but say it plainly
        snprintf(msg, sizeof msg, "tensor-parallel size %d must divide hidden (%d)", tp, c->hidden);
        return msg;
    }
    if (c->ffn % tp != 0) {
        snprintf(msg, sizeof msg, "tensor-parallel size %d must divide ffn (%d): each rank holds "
                 "ffn/tp of FC1's outputs", tp, c->ffn);
        return msg;
    }
    return NULL;
}

int tp_param_shard_shape(const LayerConfig *c, int tp, int id, int64_t shape[2]) {
    int ndim = param_shape(c, id, shape);
    TpSplit s = tp_param_split(id);
    if (s == TP_SPLIT_ROWS) shape[0] /= tp;
    if (s == TP_SPLIT_COLS) shape[1] /= tp;
    return ndim;
}

int64_t tp_param_shard_numel(const LayerConfig *c, int tp, int id) {
    int64_t shape[2];
    int ndim = tp_param_shard_shape(c, tp, id, shape);
    return ndim == 1 ? shape[0] : shape[0] * shape[1];
}

// Block [r0, r0 + nr) x [c0, c0 + nc) of a row-major matrix with `cols` columns, to or from a
// dense [nr, nc] shard.
static void copy_block(const float *src, int64_t src_cols, int64_t r0, int64_t c0, int64_t nr,
                       int64_t nc, float *dst, int64_t dst_cols, int64_t dr0, int64_t dc0) {
    for (int64_t r = 0; r < nr; r++)
        memcpy(dst + (dr0 + r) * dst_cols + dc0, src + (r0 + r) * src_cols + c0,
               (size_t)nc * sizeof(float));
}

void tp_shard_params(const LayerConfig *c, int tp, int rank, const LayerParams *full,
                     LayerParams *shard) {
    const char *problem = tp_config_problem(c, tp);
    if (problem) fail_user("%s", problem);
    if (rank < 0 || rank >= tp) DIE("rank %d out of range for tp %d", rank, tp);
    for (int id = 0; id < NUM_PARAMS; id++) {
        int64_t fs[2], ss[2];
        int ndim = param_shape(c, id, fs);
        tp_param_shard_shape(c, tp, id, ss);
        int64_t rows = fs[0], cols = ndim == 2 ? fs[1] : 1;
        int64_t nr = ss[0], nc = ndim == 2 ? ss[1] : 1;
        shard->tensor[id] = xmalloc((size_t)(nr * nc) * sizeof(float));
        TpSplit s = tp_param_split(id);
        int64_t r0 = s == TP_SPLIT_ROWS ? rank * nr : 0, c0 = s == TP_SPLIT_COLS ? rank * nc : 0;
        (void)rows;
        copy_block(full->tensor[id], cols, r0, c0, nr, nc, shard->tensor[id], nc, 0, 0);
    }
}

void tp_gather_params(const LayerConfig *c, int tp, const LayerParams *shards, LayerParams *full) {
    for (int id = 0; id < NUM_PARAMS; id++) {
        int64_t fs[2], ss[2];
        int ndim = param_shape(c, id, fs);
        tp_param_shard_shape(c, tp, id, ss);
        int64_t cols = ndim == 2 ? fs[1] : 1, nr = ss[0], nc = ndim == 2 ? ss[1] : 1;
        TpSplit s = tp_param_split(id);
        for (int r = 0; r < (s == TP_REPLICATED ? 1 : tp); r++) {
            int64_t r0 = s == TP_SPLIT_ROWS ? r * nr : 0, c0 = s == TP_SPLIT_COLS ? r * nc : 0;
            copy_block(shards[r].tensor[id], nc, 0, 0, nr, nc, full->tensor[id], cols, r0, c0);
        }
    }
}

void tp_sim_all_reduce(float *const *bufs, int tp, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float sum = 0.0f;  // float, as the GPUs' fp32 all-reduce (not the reference's double)
        for (int r = 0; r < tp; r++) sum += bufs[r][i];
        for (int r = 0; r < tp; r++) bufs[r][i] = sum;
    }
}

// ---- The whole layer, cut tp ways -----------------------------------------------------------
// What one rank holds (TpRank) and the all-reduce of one of its buffers (TP_ALL_REDUCE):
// reference/tp_rank.h. The backward is tp_sim_backward, in tp_backward.c (a graded exercise).
static float *fbuf(int64_t n) { return xcalloc((size_t)n, sizeof(float)); }

static void rank_alloc(const LayerConfig *c, int tp, TpRank *k) {
    const int64_t T = layer_tokens(c), h = c->hidden, hl = h / tp, fl = c->ffn / tp;
    const int64_t Hl = c->heads / tp;
    for (int id = 0; id < NUM_PARAMS; id++) k->g.tensor[id] = fbuf(tp_param_shard_numel(c, tp, id));
    k->ln1_out = fbuf(T * h), k->ln1_mean = fbuf(T), k->ln1_rstd = fbuf(T);
    k->qkv = fbuf(T * 3 * hl), k->probs = fbuf((int64_t)c->batch * Hl * c->seq * c->seq);
    k->ctx = fbuf(T * hl), k->proj = fbuf(T * h), k->y = fbuf(T * h);
    k->ln2_out = fbuf(T * h), k->ln2_mean = fbuf(T), k->ln2_rstd = fbuf(T);
    k->fc1 = fbuf(T * fl), k->gelu = fbuf(T * fl), k->out = fbuf(T * h);
    k->d_gelu = fbuf(T * fl), k->d_fc1 = fbuf(T * fl), k->d_ln2 = fbuf(T * h);
    k->dy = fbuf(T * h), k->d_proj = fbuf(T * h), k->d_ctx = fbuf(T * hl);
    k->d_qkv = fbuf(T * 3 * hl), k->d_ln1 = fbuf(T * h), k->dx = fbuf(T * h);
}

static void rank_free(TpRank *k, int keep_grads) {
    layer_params_free(&k->w);
    if (!keep_grads) layer_params_free(&k->g);
    float *all[] = {k->ln1_out, k->ln1_mean, k->ln1_rstd, k->qkv, k->probs, k->ctx, k->proj,
                    k->y, k->ln2_out, k->ln2_mean, k->ln2_rstd, k->fc1, k->gelu, k->out,
                    k->d_gelu, k->d_fc1, k->d_ln2, k->dy, k->d_proj, k->d_ctx, k->d_qkv,
                    k->d_ln1, k->dx};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
}

static void tp_forward(const LayerConfig *c, int tp, TpRank *ranks, const float *x, uint64_t step) {
    const int64_t T = layer_tokens(c);
    const int h = c->hidden, hl = h / tp, fl = c->ffn / tp, Hl = c->heads / tp, d = layer_head_dim(c);
    const uint64_t attn_off = dropout_offset(step, DROPOUT_SITE_ATTENTION);
    const uint64_t hid_off = dropout_offset(step, DROPOUT_SITE_HIDDEN);
    for (int r = 0; r < tp; r++) {  // LN1 (replicated), QKV (column-parallel), attention, proj partial
        TpRank *k = &ranks[r];
        float *const *w = k->w.tensor;
        ref_layernorm_forward(x, w[P_LN1_WEIGHT], w[P_LN1_BIAS], T, h, c->eps, k->ln1_out, k->ln1_mean, k->ln1_rstd);
        ref_linear_forward(k->ln1_out, w[P_QKV_WEIGHT], w[P_QKV_BIAS], T, h, 3 * hl, k->qkv);
        ref_attention_forward_heads(k->qkv, c->seq, c->batch, Hl, d, r * Hl, c->heads, c->attn_dropout,
                                    c->causal, c->seed, attn_off, k->ctx, k->probs);
        ref_linear_forward(k->ctx, w[P_PROJ_WEIGHT], NULL, T, hl, h, k->proj);  // no bias: partial
    }
    TP_ALL_REDUCE(ranks, tp, proj, T * h);
    for (int r = 0; r < tp; r++) {  // bias once, dropout (same mask everywhere), LN2, FC1, GELU, FC2 partial
        TpRank *k = &ranks[r];
        float *const *w = k->w.tensor;
        for (int64_t i = 0; i < T * h; i++) k->proj[i] += w[P_PROJ_BIAS][i % h];
        ref_dropout_forward(k->proj, T * h, c->hidden_dropout, c->seed, hid_off, k->y);
        for (int64_t i = 0; i < T * h; i++) k->y[i] += x[i];
        ref_layernorm_forward(k->y, w[P_LN2_WEIGHT], w[P_LN2_BIAS], T, h, c->eps, k->ln2_out, k->ln2_mean, k->ln2_rstd);
        ref_linear_forward(k->ln2_out, w[P_FC1_WEIGHT], w[P_FC1_BIAS], T, h, fl, k->fc1);
        ref_gelu_forward(k->fc1, T * fl, k->gelu);
        ref_linear_forward(k->gelu, w[P_FC2_WEIGHT], NULL, T, fl, h, k->out);
    }
    TP_ALL_REDUCE(ranks, tp, out, T * h);
    for (int r = 0; r < tp; r++) {
        TpRank *k = &ranks[r];
        for (int64_t i = 0; i < T * h; i++) k->out[i] += k->w.tensor[P_FC2_BIAS][i % h] + k->y[i];
    }
}

void tp_sim_layer_train_step(const LayerConfig *c, int tp, const LayerParams *params,
                             const LayerInputs *in, uint64_t step, LayerResults *res,
                             LayerParams *rank_grads) {
    const char *problem = tp_config_problem(c, tp);
    if (problem) fail_user("%s", problem);
    TpRank *ranks = xcalloc((size_t)tp, sizeof(TpRank));
    LayerParams *grads = xcalloc((size_t)tp, sizeof(LayerParams));
    for (int r = 0; r < tp; r++) {
        tp_shard_params(c, tp, r, params, &ranks[r].w);
        rank_alloc(c, tp, &ranks[r]);
    }
    tp_forward(c, tp, ranks, in->x, step);
    tp_sim_backward(c, tp, ranks, in->x, in->dy, step);
    // Every rank ends with the same out and dx; take rank 0's.
    const size_t bytes = (size_t)(layer_tokens(c) * c->hidden) * sizeof(float);
    memcpy(res->out, ranks[0].out, bytes);
    memcpy(res->dx, ranks[0].dx, bytes);
    for (int r = 0; r < tp; r++) grads[r] = ranks[r].g;
    tp_gather_params(c, tp, grads, &res->grad);
    for (int r = 0; r < tp; r++) {
        if (rank_grads) rank_grads[r] = ranks[r].g;
        rank_free(&ranks[r], rank_grads != NULL);
    }
    free(grads);
    free(ranks);
}

// ---- The block: column-parallel Linear -> LayerNorm -> row-parallel Linear -------------------
void tp_block_alloc(TpBlock *b, int hidden, int ffn) {
    b->hidden = hidden, b->ffn = ffn;
    b->w1 = fbuf((int64_t)ffn * hidden), b->b1 = fbuf(ffn);
    b->gamma = fbuf(ffn), b->beta = fbuf(ffn);
    b->w2 = fbuf((int64_t)hidden * ffn), b->b2 = fbuf(hidden);
}

void tp_block_free(TpBlock *b) {
    free(b->w1), free(b->b1), free(b->gamma), free(b->beta), free(b->w2), free(b->b2);
    memset(b, 0, sizeof *b);
}

void tp_block_init_random(TpBlock *b, uint64_t seed) {
    const int h = b->hidden, f = b->ffn;
    fill_uniform(b->w1, (int64_t)f * h, -1.0f / sqrtf((float)h), 1.0f / sqrtf((float)h), seed, 201);
    fill_uniform(b->b1, f, -1.0f / sqrtf((float)h), 1.0f / sqrtf((float)h), seed, 202);
    fill_uniform(b->gamma, f, 0.9f, 1.1f, seed, 203);
    fill_uniform(b->beta, f, -0.1f, 0.1f, seed, 204);
    fill_uniform(b->w2, (int64_t)h * f, -1.0f / sqrtf((float)f), 1.0f / sqrtf((float)f), seed, 205);
    fill_uniform(b->b2, h, -1.0f / sqrtf((float)f), 1.0f / sqrtf((float)f), seed, 206);
}

void tp_block_results_alloc(TpBlockResults *r, int64_t tokens, int hidden, int ffn) {
    r->out = fbuf(tokens * hidden);
    r->dx = fbuf(tokens * hidden);
    tp_block_alloc(&r->grad, hidden, ffn);
}

void tp_block_results_free(TpBlockResults *r) {
    free(r->out), free(r->dx);
    tp_block_free(&r->grad);
}

const char *tp_block_problem(int hidden, int ffn, int tp) {
    static char msg[160];
    if (tp < 1 || tp > TP_MAX_RANKS) {
        snprintf(msg, sizeof msg, "tensor-parallel size must be in 1..%d (got %d)", TP_MAX_RANKS, tp);
        return msg;
    }
    if (ffn % tp != 0) {
        snprintf(msg, sizeof msg, "tensor-parallel size %d must divide ffn (%d)", tp, ffn);
        return msg;
    }
    if (hidden <= 0) {
        snprintf(msg, sizeof msg, "hidden must be positive (got %d)", hidden);
        return msg;
    }
    return NULL;
}

void tp_block_reference(const TpBlock *p, const float *x, const float *dout, int64_t T, float eps,
                        TpBlockResults *res) {
    const int h = p->hidden, f = p->ffn;
    float *z = fbuf(T * f), *n = fbuf(T * f), *mean = fbuf(T), *rstd = fbuf(T);
    float *dn = fbuf(T * f), *dz = fbuf(T * f);
    TpBlock *g = &res->grad;
    ref_linear_forward(x, p->w1, p->b1, T, h, f, z);
    ref_layernorm_forward(z, p->gamma, p->beta, T, f, eps, n, mean, rstd);
    ref_linear_forward(n, p->w2, p->b2, T, f, h, res->out);
    ref_linear_backward(dout, n, p->w2, T, f, h, dn, g->w2, g->b2);
    ref_layernorm_backward(dn, z, p->gamma, mean, rstd, T, f, dz, g->gamma, g->beta);
    ref_linear_backward(dz, x, p->w1, T, h, f, res->dx, g->w1, g->b1);
    free(z), free(n), free(mean), free(rstd), free(dn), free(dz);
}

// One rank's share of the block.
typedef struct {
    TpBlock w, g;       // shards: w1 [fl, h], b1, gamma, beta [fl], w2 [h, fl], b2 [h] (replicated)
    float *z, *n;       // [T, fl]: FC1's output slice and its normalised version
    float *mean, *rstd; // [T]: local (mode a) or full-width (mode b) statistics
    float *stats;       // [T, 2]: per-token partial sums exchanged by the all-reduce (mode b)
    float *out, *dx;    // [T, h]: partial, then all-reduced
    float *dn, *dz;     // [T, fl]
} BlockRank;

static void block_shard(const TpBlock *p, int tp, int r, TpBlock *s) {
    const int h = p->hidden, f = p->ffn, fl = f / tp;
    tp_block_alloc(s, h, fl);
    copy_block(p->w1, h, (int64_t)r * fl, 0, fl, h, s->w1, h, 0, 0);       // rows
    memcpy(s->b1, p->b1 + (int64_t)r * fl, (size_t)fl * sizeof(float));
    memcpy(s->gamma, p->gamma + (int64_t)r * fl, (size_t)fl * sizeof(float));
    memcpy(s->beta, p->beta + (int64_t)r * fl, (size_t)fl * sizeof(float));
    copy_block(p->w2, f, 0, (int64_t)r * fl, h, fl, s->w2, fl, 0, 0);      // columns
    memcpy(s->b2, p->b2, (size_t)h * sizeof(float));                        // replicated
}

static void block_gather(const BlockRank *ranks, int tp, TpBlock *full) {
    const int h = full->hidden, f = full->ffn, fl = f / tp;
    for (int r = 0; r < tp; r++) {
        const TpBlock *s = &ranks[r].g;
        copy_block(s->w1, h, 0, 0, fl, h, full->w1, h, (int64_t)r * fl, 0);
        memcpy(full->b1 + (int64_t)r * fl, s->b1, (size_t)fl * sizeof(float));
        memcpy(full->gamma + (int64_t)r * fl, s->gamma, (size_t)fl * sizeof(float));
        memcpy(full->beta + (int64_t)r * fl, s->beta, (size_t)fl * sizeof(float));
        copy_block(s->w2, fl, 0, 0, h, fl, full->w2, f, 0, (int64_t)r * fl);
    }
    memcpy(full->b2, ranks[0].g.b2, (size_t)h * sizeof(float));
}

// Mode (b) forward of the LayerNorm on one rank's slice, given the full-width statistics.
static void ln_apply(const float *z, const float *gamma, const float *beta, const float *mean,
                     const float *rstd, int64_t T, int fl, float *n) {
    for (int64_t t = 0; t < T; t++)
        for (int c = 0; c < fl; c++)
            n[t * fl + c] = (float)(((double)z[t * fl + c] - mean[t]) * rstd[t] * gamma[c] + beta[c]);
}

void tp_block_sim(const TpBlock *p, const float *x, const float *dout, int64_t T, float eps, int tp,
                  TpLnMode mode, TpBlockResults *res) {
    const char *problem = tp_block_problem(p->hidden, p->ffn, tp);
    if (problem) fail_user("%s", problem);
    const int h = p->hidden, f = p->ffn, fl = f / tp;
    BlockRank *ranks = xcalloc((size_t)tp, sizeof(BlockRank));
    for (int r = 0; r < tp; r++) {
        BlockRank *k = &ranks[r];
        block_shard(p, tp, r, &k->w);
        tp_block_alloc(&k->g, h, fl);
        k->z = fbuf(T * fl), k->n = fbuf(T * fl), k->dn = fbuf(T * fl), k->dz = fbuf(T * fl);
        k->mean = fbuf(T), k->rstd = fbuf(T), k->stats = fbuf(T * 2);
        k->out = fbuf(T * h), k->dx = fbuf(T * h);
    }
    // ---- forward
    for (int r = 0; r < tp; r++) {
        BlockRank *k = &ranks[r];
        ref_linear_forward(x, k->w.w1, k->w.b1, T, h, fl, k->z);  // column-parallel
        if (mode == TP_LN_SHARD_LOCAL) {  // statistics of the slice alone
            ref_layernorm_forward(k->z, k->w.gamma, k->w.beta, T, fl, eps, k->n, k->mean, k->rstd);
        } else {  // the slice's sum and sum of squares, to be added across the ranks
            for (int64_t t = 0; t < T; t++) {
                double s = 0.0, q = 0.0;
                for (int c = 0; c < fl; c++) {
                    double v = k->z[t * fl + c];
                    s += v, q += v * v;
                }
                k->stats[2 * t] = (float)s, k->stats[2 * t + 1] = (float)q;
            }
        }
    }
    if (mode == TP_LN_EXACT) {
        TP_ALL_REDUCE(ranks, tp, stats, 2 * T);  // 2 floats per token
        for (int r = 0; r < tp; r++) {
            BlockRank *k = &ranks[r];
            for (int64_t t = 0; t < T; t++) {
                double mu = (double)k->stats[2 * t] / f;
                double var = (double)k->stats[2 * t + 1] / f - mu * mu;  // E[z^2] - E[z]^2
                if (var < 0.0) var = 0.0;
                k->mean[t] = (float)mu, k->rstd[t] = (float)(1.0 / sqrt(var + eps));
            }
            ln_apply(k->z, k->w.gamma, k->w.beta, k->mean, k->rstd, T, fl, k->n);
        }
    }
    for (int r = 0; r < tp; r++)  // row-parallel: partial outputs, no bias yet
        ref_linear_forward(ranks[r].n, ranks[r].w.w2, NULL, T, fl, h, ranks[r].out);
    TP_ALL_REDUCE(ranks, tp, out, T * h);
    for (int r = 0; r < tp; r++)
        for (int64_t i = 0; i < T * h; i++) ranks[r].out[i] += ranks[r].w.b2[i % h];
    // ---- backward
    for (int r = 0; r < tp; r++) {
        BlockRank *k = &ranks[r];
        ref_linear_backward(dout, k->n, k->w.w2, T, fl, h, k->dn, k->g.w2, k->g.b2);
        if (mode == TP_LN_SHARD_LOCAL) {
            ref_layernorm_backward(k->dn, k->z, k->w.gamma, k->mean, k->rstd, T, fl, k->dz, k->g.gamma, k->g.beta);
        } else {  // partial sums of g = dn gamma and g xhat over the slice; dgamma, dbeta local
            memset(k->g.gamma, 0, (size_t)fl * sizeof(float));
            memset(k->g.beta, 0, (size_t)fl * sizeof(float));
            for (int64_t t = 0; t < T; t++) {
                double sg = 0.0, sgx = 0.0;
                for (int c = 0; c < fl; c++) {
                    double xhat = ((double)k->z[t * fl + c] - k->mean[t]) * k->rstd[t];
                    double g = (double)k->dn[t * fl + c] * k->w.gamma[c];
                    sg += g, sgx += g * xhat;
                    k->g.gamma[c] += (float)(k->dn[t * fl + c] * xhat);
                    k->g.beta[c] += k->dn[t * fl + c];
                }
                k->stats[2 * t] = (float)sg, k->stats[2 * t + 1] = (float)sgx;
            }
        }
    }
    if (mode == TP_LN_EXACT) {
        TP_ALL_REDUCE(ranks, tp, stats, 2 * T);
        for (int r = 0; r < tp; r++) {
            BlockRank *k = &ranks[r];
            for (int64_t t = 0; t < T; t++) {
                double mg = (double)k->stats[2 * t] / f, mgx = (double)k->stats[2 * t + 1] / f;
                for (int c = 0; c < fl; c++) {
                    double xhat = ((double)k->z[t * fl + c] - k->mean[t]) * k->rstd[t];
                    double g = (double)k->dn[t * fl + c] * k->w.gamma[c];
                    k->dz[t * fl + c] = (float)(k->rstd[t] * (g - mg - xhat * mgx));
                }
            }
        }
    }
    for (int r = 0; r < tp; r++) {  // column-parallel FC1: dx is a partial sum
        BlockRank *k = &ranks[r];
        ref_linear_backward(k->dz, x, k->w.w1, T, h, fl, k->dx, k->g.w1, k->g.b1);
    }
    TP_ALL_REDUCE(ranks, tp, dx, T * h);
    memcpy(res->out, ranks[0].out, (size_t)(T * h) * sizeof(float));
    memcpy(res->dx, ranks[0].dx, (size_t)(T * h) * sizeof(float));
    block_gather(ranks, tp, &res->grad);
    for (int r = 0; r < tp; r++) {
        BlockRank *k = &ranks[r];
        tp_block_free(&k->w), tp_block_free(&k->g);
        free(k->z), free(k->n), free(k->dn), free(k->dz), free(k->mean), free(k->rstd);
        free(k->stats), free(k->out), free(k->dx);
    }
    free(ranks);
}
