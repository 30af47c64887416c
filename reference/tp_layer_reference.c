// The layer under tensor parallelism on the CPU: see tp_layer_reference.h.
//
// Written the way the GPU program runs: every phase is a loop over the ranks ("each GPU
// does this on its own data"), separated by simulated collectives ("the GPUs exchange").
// Nothing a rank computes reads another rank's buffers except through a collective.
//
// Sizes: T tokens, h hidden, H heads, f ffn; per rank hl = h/tp, Hl = H/tp, fl = f/tp, and
// Tl tokens in the replicated part: T/tp under sequence parallelism, T otherwise. Names
// ending in _loc are [Tl, ...] (the rank's slice, or everything in plain TP); the rest are
// [T, ...].
#include "reference/tp_layer_reference.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/errors.h"
#include "common/core/philox.h"
#include "reference/parallel_reference.h"
#include "reference/reference.h"
#include "reference/tp_reference.h"

const char *tp_variant_name(const TpVariant *v) {
    if (v->layer == TP_LAYER_PARALLEL) return v->sequence_parallel ? "parallel, sequence-parallel" : "parallel";
    return v->sequence_parallel ? "serial, sequence-parallel" : "serial";
}

const char *tp_variant_problem(const LayerConfig *c, int tp, const TpVariant *v) {
    static char msg[200];
    const char *problem = tp_config_problem(c, tp);
    if (problem) return problem;
    if (v->sequence_parallel && c->seq % tp != 0) {
        snprintf(msg, sizeof msg, "sequence parallelism: tensor-parallel size %d must divide seq (%d): each "
                 "rank holds seq/tp of the sequence", tp, c->seq);
        return msg;
    }
    return NULL;
}

LayerReferenceFn tp_variant_reference(const TpVariant *v) {
    return v->layer == TP_LAYER_PARALLEL ? ref_parallel_train_step : ref_layer_train_step;
}

static float *fbuf(int64_t n) { return xcalloc((size_t)n, sizeof(float)); }

// ---- What crosses the boundary of the tensor-parallel region ------------------------------------
// Every rank's pointer to one field, for the simulated collectives.
#define RANK_BUFS(name, ranks, tp, field) \
    float *name[TP_MAX_RANKS] = {0};      \
    for (int r_ = 0; r_ < (tp); r_++) name[r_] = (ranks)[r_].field

// Entering: a column-parallel GEMM needs all T tokens. Plain TP: the rank has them
// (loc is [T, h]); sequence parallelism: all-gather the [T/tp, h] slices.
static void gather_tokens(int tp, int sp, float *const *loc, float *const *full, int64_t slice_n) {
    if (sp) tp_sim_all_gather((const float *const *)loc, full, tp, slice_n);
    else
        for (int r = 0; r < tp; r++) memcpy(full[r], loc[r], (size_t)slice_n * sizeof(float));
}

// Leaving: a row-parallel GEMM's output is partial. Plain TP: all-reduce (every rank keeps
// the whole sum); sequence parallelism: reduce-scatter (each keeps its slice of the sum).
static void reduce_tokens(int tp, int sp, float *const *partial, float *const *loc, int64_t loc_n) {
    if (sp) {
        tp_sim_reduce_scatter((const float *const *)partial, loc, tp, loc_n);
    } else {
        tp_sim_all_reduce(partial, tp, loc_n);
        for (int r = 0; r < tp; r++) memcpy(loc[r], partial[r], (size_t)loc_n * sizeof(float));
    }
}

// Dropout on elements [first, first + n) of the whole tensor: ref_dropout_forward with the
// index of each element in the unsharded [T, h], so that a slice draws the unsharded mask.
static void dropout_at(const float *x, int64_t n, float p, uint64_t seed, uint64_t offset, uint64_t first,
                       float *y) {
    double scale = dropout_keep_scale(p);
    for (int64_t i = 0; i < n; i++)
        y[i] = (p > 0.0f && !dropout_keep(seed, offset, first + (uint64_t)i, p)) ? 0.0f
                                                                               : (float)(x[i] * (p > 0.0f ? scale : 1.0));
}

// db[cols] = sum over rows of dy: a bias gradient over the rank's own rows.
static void column_sums(const float *dy, int64_t rows, int cols, float *db) {
    for (int c = 0; c < cols; c++) {
        double s = 0.0;
        for (int64_t r = 0; r < rows; r++) s += dy[r * cols + c];
        db[c] = (float)s;
    }
}

// Columns [col0, col0 + width) of a [rows, row_len] matrix to or from a dense [rows, width]
// one: what the GPU does with strided views, the CPU does with copies.
static void columns(float *matrix, int64_t rows, int row_len, int col0, int width, float *view, int to_view) {
    for (int64_t r = 0; r < rows; r++) {
        float *m = matrix + r * row_len + col0, *v = view + r * width;
        if (to_view) memcpy(v, m, (size_t)width * sizeof(float));
        else memcpy(m, v, (size_t)width * sizeof(float));
    }
}

// Under sequence parallelism the replicated parameters' gradients are partial sums over
// each rank's tokens: all-reduce them (unless the variant asks to show the mistake).
static void all_reduce_replicated_grads(const TpVariant *v, int tp, float *const *const *grads, int count,
                                        int64_t n) {
    if (!v->sequence_parallel || v->skip_replicated_grad_all_reduce) return;
    for (int k = 0; k < count; k++) tp_sim_all_reduce(grads[k], tp, n);
}

// ---- The serial layer ---------------------------------------------------------------------------
typedef struct {
    LayerParams w, g;  // shards (the caller's, read only) and their gradients
    float *x_loc, *dout_loc;                      // [Tl, h]: the rank's tokens of x and dy
    float *a_loc, *ln1_mean, *ln1_rstd, *a;       // LN1's output [Tl, h], stats [Tl]; gathered [T, h]
    float *qkv, *probs, *ctx;                     // [T, 3hl], [b, Hl, s, s], [T, hl]
    float *p, *p_loc, *y_loc;                     // Proj partial [T, h]; reduced [Tl, h]; y [Tl, h]
    float *b_loc, *ln2_mean, *ln2_rstd, *b;       // LN2's output [Tl, h]; gathered [T, h]
    float *fc1, *gelu, *o, *out_loc;              // [T, fl] x2; FC2 partial [T, h]; out [Tl, h]
    float *dout, *d_gelu, *d_fc1, *d_ln2, *d_ln2_loc;  // gathered dy [T, h]; ...; partial; reduced
    float *dy_loc, *d_proj_loc, *d_proj;          // the gradient at y [Tl, h]; at Proj's output
    float *d_ctx, *d_qkv, *d_ln1, *d_ln1_loc, *dx_loc;
} SerialRank;

static void serial_alloc(const LayerConfig *c, int tp, int64_t Tl, SerialRank *k) {
    const int64_t T = layer_tokens(c), h = c->hidden, hl = h / tp, fl = c->ffn / tp, Hl = c->heads / tp;
    for (int id = 0; id < NUM_PARAMS; id++) k->g.tensor[id] = fbuf(tp_param_shard_numel(c, tp, id));
    k->x_loc = fbuf(Tl * h), k->dout_loc = fbuf(Tl * h);
    k->a_loc = fbuf(Tl * h), k->ln1_mean = fbuf(Tl), k->ln1_rstd = fbuf(Tl), k->a = fbuf(T * h);
    k->qkv = fbuf(T * 3 * hl), k->probs = fbuf((int64_t)c->batch * Hl * c->seq * c->seq), k->ctx = fbuf(T * hl);
    k->p = fbuf(T * h), k->p_loc = fbuf(Tl * h), k->y_loc = fbuf(Tl * h);
    k->b_loc = fbuf(Tl * h), k->ln2_mean = fbuf(Tl), k->ln2_rstd = fbuf(Tl), k->b = fbuf(T * h);
    k->fc1 = fbuf(T * fl), k->gelu = fbuf(T * fl), k->o = fbuf(T * h), k->out_loc = fbuf(Tl * h);
    k->dout = fbuf(T * h), k->d_gelu = fbuf(T * fl), k->d_fc1 = fbuf(T * fl);
    k->d_ln2 = fbuf(T * h), k->d_ln2_loc = fbuf(Tl * h);
    k->dy_loc = fbuf(Tl * h), k->d_proj_loc = fbuf(Tl * h), k->d_proj = fbuf(T * h);
    k->d_ctx = fbuf(T * hl), k->d_qkv = fbuf(T * 3 * hl), k->d_ln1 = fbuf(T * h), k->d_ln1_loc = fbuf(Tl * h);
    k->dx_loc = fbuf(Tl * h);
}

static void serial_free(SerialRank *k) {
    float *all[] = {k->x_loc, k->dout_loc, k->a_loc, k->ln1_mean, k->ln1_rstd, k->a, k->qkv, k->probs,
                    k->ctx, k->p, k->p_loc, k->y_loc, k->b_loc, k->ln2_mean, k->ln2_rstd, k->b,
                    k->fc1, k->gelu, k->o, k->out_loc, k->dout, k->d_gelu, k->d_fc1, k->d_ln2,
                    k->d_ln2_loc, k->dy_loc, k->d_proj_loc, k->d_proj, k->d_ctx, k->d_qkv, k->d_ln1,
                    k->d_ln1_loc, k->dx_loc};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
}

static void serial_train_step(const LayerConfig *c, int tp, const TpVariant *v, SerialRank *ranks, int64_t Tl,
                              uint64_t step) {
    const int sp = v->sequence_parallel;
    const int64_t T = layer_tokens(c);
    const int h = c->hidden, hl = h / tp, fl = c->ffn / tp, Hl = c->heads / tp, d = layer_head_dim(c);
    const uint64_t attn_off = dropout_offset(step, DROPOUT_SITE_ATTENTION);
    const uint64_t hid_off = dropout_offset(step, DROPOUT_SITE_HIDDEN);
    RANK_BUFS(a_loc, ranks, tp, a_loc);
    RANK_BUFS(a, ranks, tp, a);
    RANK_BUFS(p, ranks, tp, p);
    RANK_BUFS(p_loc, ranks, tp, p_loc);
    RANK_BUFS(b_loc, ranks, tp, b_loc);
    RANK_BUFS(b, ranks, tp, b);
    RANK_BUFS(o, ranks, tp, o);
    RANK_BUFS(out_loc, ranks, tp, out_loc);
    RANK_BUFS(dout_loc, ranks, tp, dout_loc);
    RANK_BUFS(dout, ranks, tp, dout);
    RANK_BUFS(d_ln2, ranks, tp, d_ln2);
    RANK_BUFS(d_ln2_loc, ranks, tp, d_ln2_loc);
    RANK_BUFS(d_proj_loc, ranks, tp, d_proj_loc);
    RANK_BUFS(d_proj, ranks, tp, d_proj);
    RANK_BUFS(d_ln1, ranks, tp, d_ln1);
    RANK_BUFS(d_ln1_loc, ranks, tp, d_ln1_loc);

    // ---- forward
    for (int r = 0; r < tp; r++) {  // LN1 on the rank's tokens
        SerialRank *k = &ranks[r];
        ref_layernorm_forward(k->x_loc, k->w.tensor[P_LN1_WEIGHT], k->w.tensor[P_LN1_BIAS], Tl, h, c->eps, k->a_loc,
                              k->ln1_mean, k->ln1_rstd);
    }
    gather_tokens(tp, sp, a_loc, a, Tl * h);
    for (int r = 0; r < tp; r++) {  // QKV (column-parallel: its heads), attention, Proj partial
        SerialRank *k = &ranks[r];
        float *const *w = k->w.tensor;
        ref_linear_forward(k->a, w[P_QKV_WEIGHT], w[P_QKV_BIAS], T, h, 3 * hl, k->qkv);
        ref_attention_forward_heads(k->qkv, c->seq, c->batch, Hl, d, r * Hl, c->heads, c->attn_dropout, c->causal,
                                    c->seed, attn_off, k->ctx, k->probs);
        ref_linear_forward(k->ctx, w[P_PROJ_WEIGHT], NULL, T, hl, h, k->p);  // no bias: partial
    }
    reduce_tokens(tp, sp, p, p_loc, Tl * h);
    for (int r = 0; r < tp; r++) {  // bias once, dropout, residual, LN2 on the rank's tokens
        SerialRank *k = &ranks[r];
        float *const *w = k->w.tensor;
        const uint64_t first = sp ? (uint64_t)(r * Tl * h) : 0;  // the slice's place in [T, h]
        for (int64_t i = 0; i < Tl * h; i++) k->p_loc[i] += w[P_PROJ_BIAS][i % h];
        dropout_at(k->p_loc, Tl * h, c->hidden_dropout, c->seed, hid_off, first, k->y_loc);
        for (int64_t i = 0; i < Tl * h; i++) k->y_loc[i] += k->x_loc[i];
        ref_layernorm_forward(k->y_loc, w[P_LN2_WEIGHT], w[P_LN2_BIAS], Tl, h, c->eps, k->b_loc, k->ln2_mean,
                              k->ln2_rstd);
    }
    gather_tokens(tp, sp, b_loc, b, Tl * h);
    for (int r = 0; r < tp; r++) {  // FC1 (column-parallel), GELU, FC2 partial
        SerialRank *k = &ranks[r];
        float *const *w = k->w.tensor;
        ref_linear_forward(k->b, w[P_FC1_WEIGHT], w[P_FC1_BIAS], T, h, fl, k->fc1);
        ref_gelu_forward(k->fc1, T * fl, k->gelu);
        ref_linear_forward(k->gelu, w[P_FC2_WEIGHT], NULL, T, fl, h, k->o);
    }
    reduce_tokens(tp, sp, o, out_loc, Tl * h);
    for (int r = 0; r < tp; r++) {  // bias once, residual
        SerialRank *k = &ranks[r];
        for (int64_t i = 0; i < Tl * h; i++) k->out_loc[i] += k->w.tensor[P_FC2_BIAS][i % h] + k->y_loc[i];
    }

    // ---- backward
    gather_tokens(tp, sp, dout_loc, dout, Tl * h);  // FC2's backward needs dy of every token
    for (int r = 0; r < tp; r++) {  // FC2 (row-parallel: its input gradient is local), GELU, FC1
        SerialRank *k = &ranks[r];
        float *const *w = k->w.tensor;
        float **g = k->g.tensor;
        ref_linear_backward(k->dout, k->gelu, w[P_FC2_WEIGHT], T, fl, h, k->d_gelu, g[P_FC2_WEIGHT], NULL);
        column_sums(k->dout_loc, Tl, h, g[P_FC2_BIAS]);  // the rank's tokens: all of them in plain TP
        ref_gelu_backward(k->d_gelu, k->fc1, T * fl, k->d_fc1);
        ref_linear_backward(k->d_fc1, k->b, w[P_FC1_WEIGHT], T, h, fl, k->d_ln2, g[P_FC1_WEIGHT], g[P_FC1_BIAS]);
    }
    reduce_tokens(tp, sp, d_ln2, d_ln2_loc, Tl * h);  // FC1's input gradient was partial
    for (int r = 0; r < tp; r++) {  // LN2, residual, dropout on the rank's tokens
        SerialRank *k = &ranks[r];
        float **g = k->g.tensor;
        const uint64_t first = sp ? (uint64_t)(r * Tl * h) : 0;
        ref_layernorm_backward(k->d_ln2_loc, k->y_loc, k->w.tensor[P_LN2_WEIGHT], k->ln2_mean, k->ln2_rstd, Tl, h,
                               k->dy_loc, g[P_LN2_WEIGHT], g[P_LN2_BIAS]);
        for (int64_t i = 0; i < Tl * h; i++) k->dy_loc[i] += k->dout_loc[i];
        dropout_at(k->dy_loc, Tl * h, c->hidden_dropout, c->seed, hid_off, first, k->d_proj_loc);
        column_sums(k->d_proj_loc, Tl, h, g[P_PROJ_BIAS]);
    }
    gather_tokens(tp, sp, d_proj_loc, d_proj, Tl * h);
    for (int r = 0; r < tp; r++) {  // Proj (row-parallel), attention, QKV (input gradient partial)
        SerialRank *k = &ranks[r];
        float *const *w = k->w.tensor;
        float **g = k->g.tensor;
        ref_linear_backward(k->d_proj, k->ctx, w[P_PROJ_WEIGHT], T, hl, h, k->d_ctx, g[P_PROJ_WEIGHT], NULL);
        ref_attention_backward_heads(k->d_ctx, k->qkv, k->probs, c->seq, c->batch, Hl, d, r * Hl, c->heads,
                                     c->attn_dropout, c->causal, c->seed, attn_off, k->d_qkv);
        ref_linear_backward(k->d_qkv, k->a, w[P_QKV_WEIGHT], T, h, 3 * hl, k->d_ln1, g[P_QKV_WEIGHT],
                            g[P_QKV_BIAS]);
    }
    reduce_tokens(tp, sp, d_ln1, d_ln1_loc, Tl * h);
    for (int r = 0; r < tp; r++) {  // LN1 and the residual, on the rank's tokens
        SerialRank *k = &ranks[r];
        ref_layernorm_backward(k->d_ln1_loc, k->x_loc, k->w.tensor[P_LN1_WEIGHT], k->ln1_mean, k->ln1_rstd, Tl, h,
                               k->dx_loc, k->g.tensor[P_LN1_WEIGHT], k->g.tensor[P_LN1_BIAS]);
        for (int64_t i = 0; i < Tl * h; i++) k->dx_loc[i] += k->dy_loc[i];
    }
    RANK_BUFS(g_ln1w, ranks, tp, g.tensor[P_LN1_WEIGHT]);
    RANK_BUFS(g_ln1b, ranks, tp, g.tensor[P_LN1_BIAS]);
    RANK_BUFS(g_ln2w, ranks, tp, g.tensor[P_LN2_WEIGHT]);
    RANK_BUFS(g_ln2b, ranks, tp, g.tensor[P_LN2_BIAS]);
    RANK_BUFS(g_projb, ranks, tp, g.tensor[P_PROJ_BIAS]);
    RANK_BUFS(g_fc2b, ranks, tp, g.tensor[P_FC2_BIAS]);
    float *const *replicated[] = {g_ln1w, g_ln1b, g_ln2w, g_ln2b, g_projb, g_fc2b};
    all_reduce_replicated_grads(v, tp, replicated, 6, h);
}

// ---- The parallel layer, fused -------------------------------------------------------------------
typedef struct {
    TpFusedShard w, g;                      // fused shards and their gradients
    float *x_loc, *dout_loc;                // [Tl, h]
    float *a_loc, *mean, *rstd, *a;         // LN's output [Tl, h], stats [Tl]; gathered [T, h]
    float *in_out, *qkv, *h1;               // [T, n_in] = [qkv | h1]: [T, 3hl] and [T, fl] views
    float *probs, *ctx, *gl, *cat;          // attention; GELU(h1); [ctx | gl] [T, k_out]
    float *z, *z_loc, *out_loc;             // output GEMM partial [T, h]; reduced [Tl, h]; out
    float *dz_loc, *dz, *dcat, *dctx, *dgl, *dh1, *dqkv, *din, *da, *da_loc, *dx_loc;
} ParallelRank;

static void parallel_alloc(const LayerConfig *c, int tp, int64_t Tl, ParallelRank *k) {
    const int64_t T = layer_tokens(c), h = c->hidden, hl = h / tp, fl = c->ffn / tp, Hl = c->heads / tp;
    tp_fused_shard_alloc(c, tp, &k->w);
    tp_fused_shard_alloc(c, tp, &k->g);
    const int64_t n_in = k->w.n_in, k_out = k->w.k_out;
    k->x_loc = fbuf(Tl * h), k->dout_loc = fbuf(Tl * h);
    k->a_loc = fbuf(Tl * h), k->mean = fbuf(Tl), k->rstd = fbuf(Tl), k->a = fbuf(T * h);
    k->in_out = fbuf(T * n_in), k->qkv = fbuf(T * 3 * hl), k->h1 = fbuf(T * fl);
    k->probs = fbuf((int64_t)c->batch * Hl * c->seq * c->seq), k->ctx = fbuf(T * hl), k->gl = fbuf(T * fl);
    k->cat = fbuf(T * k_out), k->z = fbuf(T * h), k->z_loc = fbuf(Tl * h), k->out_loc = fbuf(Tl * h);
    k->dz_loc = fbuf(Tl * h), k->dz = fbuf(T * h), k->dcat = fbuf(T * k_out), k->dctx = fbuf(T * hl);
    k->dgl = fbuf(T * fl), k->dh1 = fbuf(T * fl), k->dqkv = fbuf(T * 3 * hl), k->din = fbuf(T * n_in);
    k->da = fbuf(T * h), k->da_loc = fbuf(Tl * h), k->dx_loc = fbuf(Tl * h);
}

static void parallel_free(ParallelRank *k) {
    tp_fused_shard_free(&k->w), tp_fused_shard_free(&k->g);
    float *all[] = {k->x_loc, k->dout_loc, k->a_loc, k->mean, k->rstd, k->a, k->in_out, k->qkv, k->h1,
                    k->probs, k->ctx, k->gl, k->cat, k->z, k->z_loc, k->out_loc, k->dz_loc, k->dz,
                    k->dcat, k->dctx, k->dgl, k->dh1, k->dqkv, k->din, k->da, k->da_loc, k->dx_loc};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
}

static void parallel_train_step(const LayerConfig *c, int tp, const TpVariant *v, ParallelRank *ranks, int64_t Tl,
                                uint64_t step) {
    const int sp = v->sequence_parallel;
    const int64_t T = layer_tokens(c);
    const int h = c->hidden, hl = h / tp, fl = c->ffn / tp, Hl = c->heads / tp, d = layer_head_dim(c);
    const int n_in = ranks[0].w.n_in, k_out = ranks[0].w.k_out;
    const uint64_t attn_off = dropout_offset(step, DROPOUT_SITE_ATTENTION);
    const uint64_t hid_off = dropout_offset(step, DROPOUT_SITE_HIDDEN);
    RANK_BUFS(a_loc, ranks, tp, a_loc);
    RANK_BUFS(a, ranks, tp, a);
    RANK_BUFS(z, ranks, tp, z);
    RANK_BUFS(z_loc, ranks, tp, z_loc);
    RANK_BUFS(dz_loc, ranks, tp, dz_loc);
    RANK_BUFS(dz, ranks, tp, dz);
    RANK_BUFS(da, ranks, tp, da);
    RANK_BUFS(da_loc, ranks, tp, da_loc);

    // ---- forward: one collective
    for (int r = 0; r < tp; r++) {
        ParallelRank *k = &ranks[r];
        ref_layernorm_forward(k->x_loc, k->w.ln_weight, k->w.ln_bias, Tl, h, c->eps, k->a_loc, k->mean, k->rstd);
    }
    gather_tokens(tp, sp, a_loc, a, Tl * h);
    for (int r = 0; r < tp; r++) {  // one column-parallel GEMM, the two branches, one row-parallel GEMM
        ParallelRank *k = &ranks[r];
        ref_linear_forward(k->a, k->w.w_in, k->w.b_in, T, h, n_in, k->in_out);
        columns(k->in_out, T, n_in, 0, 3 * hl, k->qkv, 1);
        columns(k->in_out, T, n_in, 3 * hl, fl, k->h1, 1);
        ref_attention_forward_heads(k->qkv, c->seq, c->batch, Hl, d, r * Hl, c->heads, c->attn_dropout, c->causal,
                                    c->seed, attn_off, k->ctx, k->probs);
        ref_gelu_forward(k->h1, T * fl, k->gl);
        columns(k->cat, T, k_out, 0, hl, k->ctx, 0);
        columns(k->cat, T, k_out, hl, fl, k->gl, 0);
        ref_linear_forward(k->cat, k->w.w_out, NULL, T, k_out, h, k->z);  // partial: both branches
    }
    reduce_tokens(tp, sp, z, z_loc, Tl * h);
    for (int r = 0; r < tp; r++) {  // bias once, dropout, residual
        ParallelRank *k = &ranks[r];
        const uint64_t first = sp ? (uint64_t)(r * Tl * h) : 0;
        for (int64_t i = 0; i < Tl * h; i++) k->z_loc[i] += k->w.b_out[i % h];
        dropout_at(k->z_loc, Tl * h, c->hidden_dropout, c->seed, hid_off, first, k->out_loc);
        for (int64_t i = 0; i < Tl * h; i++) k->out_loc[i] += k->x_loc[i];
    }

    // ---- backward: one collective
    for (int r = 0; r < tp; r++) {
        ParallelRank *k = &ranks[r];
        const uint64_t first = sp ? (uint64_t)(r * Tl * h) : 0;
        dropout_at(k->dout_loc, Tl * h, c->hidden_dropout, c->seed, hid_off, first, k->dz_loc);
        column_sums(k->dz_loc, Tl, h, k->g.b_out);
    }
    gather_tokens(tp, sp, dz_loc, dz, Tl * h);
    for (int r = 0; r < tp; r++) {
        ParallelRank *k = &ranks[r];
        ref_linear_backward(k->dz, k->cat, k->w.w_out, T, k_out, h, k->dcat, k->g.w_out, NULL);
        columns(k->dcat, T, k_out, 0, hl, k->dctx, 1);
        columns(k->dcat, T, k_out, hl, fl, k->dgl, 1);
        ref_attention_backward_heads(k->dctx, k->qkv, k->probs, c->seq, c->batch, Hl, d, r * Hl, c->heads,
                                     c->attn_dropout, c->causal, c->seed, attn_off, k->dqkv);
        ref_gelu_backward(k->dgl, k->h1, T * fl, k->dh1);
        columns(k->din, T, n_in, 0, 3 * hl, k->dqkv, 0);
        columns(k->din, T, n_in, 3 * hl, fl, k->dh1, 0);
        ref_linear_backward(k->din, k->a, k->w.w_in, T, h, n_in, k->da, k->g.w_in, k->g.b_in);  // da partial
    }
    reduce_tokens(tp, sp, da, da_loc, Tl * h);
    for (int r = 0; r < tp; r++) {
        ParallelRank *k = &ranks[r];
        ref_layernorm_backward(k->da_loc, k->x_loc, k->w.ln_weight, k->mean, k->rstd, Tl, h, k->dx_loc,
                               k->g.ln_weight, k->g.ln_bias);
        for (int64_t i = 0; i < Tl * h; i++) k->dx_loc[i] += k->dout_loc[i];
    }
    RANK_BUFS(g_lnw, ranks, tp, g.ln_weight);
    RANK_BUFS(g_lnb, ranks, tp, g.ln_bias);
    RANK_BUFS(g_bout, ranks, tp, g.b_out);
    float *const *replicated[] = {g_lnw, g_lnb, g_bout};
    all_reduce_replicated_grads(v, tp, replicated, 3, h);
}

// ---- Entry points --------------------------------------------------------------------------------
// Each rank's slice of a [T, h] input (all of it in plain TP); back: the results put together.
static void scatter_input(const float *whole, float *loc, int r, int64_t Tl, int h) {
    memcpy(loc, whole + (int64_t)r * Tl * h, (size_t)(Tl * h) * sizeof(float));
}

void tp_sim_train_step(const LayerConfig *c, int tp, const TpVariant *v, const LayerParams *shards,
                       const LayerInputs *in, uint64_t step, float *out, float *dx, LayerParams *rank_grads) {
    const char *problem = tp_variant_problem(c, tp, v);
    if (problem) fail_user("%s", problem);
    const int h = c->hidden;
    const int64_t T = layer_tokens(c), Tl = v->sequence_parallel ? T / tp : T;
    const int slices = v->sequence_parallel ? tp : 1;  // how many ranks' outputs make the whole
    if (v->layer == TP_LAYER_SERIAL) {
        SerialRank *ranks = xcalloc((size_t)tp, sizeof(SerialRank));
        for (int r = 0; r < tp; r++) {
            serial_alloc(c, tp, Tl, &ranks[r]);
            ranks[r].w = shards[r];  // read only
            scatter_input(in->x, ranks[r].x_loc, v->sequence_parallel ? r : 0, Tl, h);
            scatter_input(in->dy, ranks[r].dout_loc, v->sequence_parallel ? r : 0, Tl, h);
        }
        serial_train_step(c, tp, v, ranks, Tl, step);
        for (int r = 0; r < slices; r++) {
            memcpy(out + r * Tl * h, ranks[r].out_loc, (size_t)(Tl * h) * sizeof(float));
            memcpy(dx + r * Tl * h, ranks[r].dx_loc, (size_t)(Tl * h) * sizeof(float));
        }
        for (int r = 0; r < tp; r++) {
            rank_grads[r] = ranks[r].g;
            serial_free(&ranks[r]);
        }
        free(ranks);
    } else {
        ParallelRank *ranks = xcalloc((size_t)tp, sizeof(ParallelRank));
        for (int r = 0; r < tp; r++) {
            parallel_alloc(c, tp, Tl, &ranks[r]);
            tp_fuse_shard(c, tp, &shards[r], &ranks[r].w);
            scatter_input(in->x, ranks[r].x_loc, v->sequence_parallel ? r : 0, Tl, h);
            scatter_input(in->dy, ranks[r].dout_loc, v->sequence_parallel ? r : 0, Tl, h);
        }
        parallel_train_step(c, tp, v, ranks, Tl, step);
        for (int r = 0; r < slices; r++) {
            memcpy(out + r * Tl * h, ranks[r].out_loc, (size_t)(Tl * h) * sizeof(float));
            memcpy(dx + r * Tl * h, ranks[r].dx_loc, (size_t)(Tl * h) * sizeof(float));
        }
        for (int r = 0; r < tp; r++) {
            for (int id = 0; id < NUM_PARAMS; id++) rank_grads[r].tensor[id] = fbuf(tp_param_shard_numel(c, tp, id));
            tp_unfuse_shard_grads(c, tp, &ranks[r].g, &rank_grads[r]);
            parallel_free(&ranks[r]);
        }
        free(ranks);
    }
}

void tp_sim_layer_train_step(const LayerConfig *c, int tp, const TpVariant *v, const LayerParams *params,
                             const LayerInputs *in, uint64_t step, LayerResults *res, LayerParams *rank_grads) {
    const char *problem = tp_variant_problem(c, tp, v);
    if (problem) fail_user("%s", problem);
    LayerParams *shards = xcalloc((size_t)tp, sizeof(LayerParams));
    LayerParams *grads = xcalloc((size_t)tp, sizeof(LayerParams));
    for (int r = 0; r < tp; r++) tp_shard_params(c, tp, r, params, &shards[r]);
    tp_sim_train_step(c, tp, v, shards, in, step, res->out, res->dx, grads);
    tp_gather_params(c, tp, grads, &res->grad);
    for (int r = 0; r < tp; r++) {
        layer_params_free(&shards[r]);
        if (rank_grads) rank_grads[r] = grads[r];
        else layer_params_free(&grads[r]);
    }
    free(shards);
    free(grads);
}
