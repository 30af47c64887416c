// Tensor parallelism simulated on the CPU: how the parameters are cut, the collectives, the
// parallel layer's fused shards and step 07's block (see tp_reference.h; the layer itself is
// in tp_layer_reference.c).
//
// The simulations are written the way the GPU program runs: every phase is a loop over the
// ranks ("each GPU does this on its own data"), and the phases are separated by a simulated
// collective ("the GPUs exchange partial sums"). Nothing a rank computes reads another
// rank's buffers except through a collective.
#include "reference/tp_reference.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/errors.h"
#include "common/core/philox.h"
#include "reference/reference.h"

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

static float *fbuf(int64_t n) { return xcalloc((size_t)n, sizeof(float)); }

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

void tp_sim_all_gather(const float *const *slice, float *const *full, int tp, int64_t n) {
    for (int dst = 0; dst < tp; dst++)
        for (int src = 0; src < tp; src++) memcpy(full[dst] + src * n, slice[src], (size_t)n * sizeof(float));
}

void tp_sim_reduce_scatter(const float *const *full, float *const *slice, int tp, int64_t n) {
    for (int dst = 0; dst < tp; dst++)
        for (int64_t i = 0; i < n; i++) {
            float sum = 0.0f;
            for (int r = 0; r < tp; r++) sum += full[r][dst * n + i];
            slice[dst][i] = sum;
        }
}

// ---- The parallel layer's fused shards ---------------------------------------------------------
void tp_fused_shard_alloc(const LayerConfig *c, int tp, TpFusedShard *f) {
    const int h = c->hidden, hl = h / tp, fl = c->ffn / tp;
    f->hidden = h, f->n_in = 3 * hl + fl, f->k_out = hl + fl;
    f->ln_weight = fbuf(h), f->ln_bias = fbuf(h);
    f->w_in = fbuf((int64_t)f->n_in * h), f->b_in = fbuf(f->n_in);
    f->w_out = fbuf((int64_t)h * f->k_out), f->b_out = fbuf(h);
}

void tp_fused_shard_free(TpFusedShard *f) {
    float *all[] = {f->ln_weight, f->ln_bias, f->w_in, f->b_in, f->w_out, f->b_out};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
    memset(f, 0, sizeof *f);
}

void tp_fuse_shard(const LayerConfig *c, int tp, const LayerParams *shard, TpFusedShard *f) {
    const int64_t h = c->hidden, hl = h / tp, fl = c->ffn / tp;
    float *const *w = shard->tensor;
    memcpy(f->ln_weight, w[P_LN1_WEIGHT], (size_t)h * sizeof(float));
    memcpy(f->ln_bias, w[P_LN1_BIAS], (size_t)h * sizeof(float));
    // Rows (output features) stacked: the rank's 3h/tp of qkv, then its f/tp of fc1.
    copy_block(w[P_QKV_WEIGHT], h, 0, 0, 3 * hl, h, f->w_in, h, 0, 0);
    copy_block(w[P_FC1_WEIGHT], h, 0, 0, fl, h, f->w_in, h, 3 * hl, 0);
    memcpy(f->b_in, w[P_QKV_BIAS], (size_t)(3 * hl) * sizeof(float));
    memcpy(f->b_in + 3 * hl, w[P_FC1_BIAS], (size_t)fl * sizeof(float));
    // Columns (input features) side by side: the rank's h/tp of proj, then its f/tp of fc2.
    copy_block(w[P_PROJ_WEIGHT], hl, 0, 0, h, hl, f->w_out, f->k_out, 0, 0);
    copy_block(w[P_FC2_WEIGHT], fl, 0, 0, h, fl, f->w_out, f->k_out, 0, hl);
    for (int64_t o = 0; o < h; o++) f->b_out[o] = w[P_PROJ_BIAS][o] + w[P_FC2_BIAS][o];
}

void tp_unfuse_shard_grads(const LayerConfig *c, int tp, const TpFusedShard *g, LayerParams *out) {
    const int64_t h = c->hidden, hl = h / tp, fl = c->ffn / tp;
    float **w = out->tensor;
    memcpy(w[P_LN1_WEIGHT], g->ln_weight, (size_t)h * sizeof(float));
    memcpy(w[P_LN1_BIAS], g->ln_bias, (size_t)h * sizeof(float));
    memset(w[P_LN2_WEIGHT], 0, (size_t)h * sizeof(float));  // ln2 is not used
    memset(w[P_LN2_BIAS], 0, (size_t)h * sizeof(float));
    copy_block(g->w_in, h, 0, 0, 3 * hl, h, w[P_QKV_WEIGHT], h, 0, 0);
    copy_block(g->w_in, h, 3 * hl, 0, fl, h, w[P_FC1_WEIGHT], h, 0, 0);
    memcpy(w[P_QKV_BIAS], g->b_in, (size_t)(3 * hl) * sizeof(float));
    memcpy(w[P_FC1_BIAS], g->b_in + 3 * hl, (size_t)fl * sizeof(float));
    copy_block(g->w_out, g->k_out, 0, 0, h, hl, w[P_PROJ_WEIGHT], hl, 0, 0);
    copy_block(g->w_out, g->k_out, 0, hl, h, fl, w[P_FC2_WEIGHT], fl, 0, 0);
    memcpy(w[P_PROJ_BIAS], g->b_out, (size_t)h * sizeof(float));  // both biases enter as a sum
    memcpy(w[P_FC2_BIAS], g->b_out, (size_t)h * sizeof(float));
}

// The all-reduce of one named buffer of every rank.
#define ALL_REDUCE(ranks, tp, field, n)                                  \
    do {                                                                 \
        float *bufs_[TP_MAX_RANKS] = {0};                                \
        for (int r_ = 0; r_ < (tp); r_++) bufs_[r_] = (ranks)[r_].field; \
        tp_sim_all_reduce(bufs_, (tp), (n));                             \
    } while (0)

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
        ALL_REDUCE(ranks, tp, stats, 2 * T);  // 2 floats per token
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
    ALL_REDUCE(ranks, tp, out, T * h);
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
        ALL_REDUCE(ranks, tp, stats, 2 * T);
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
    ALL_REDUCE(ranks, tp, dx, T * h);
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
