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

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/errors.h"
#include "common/core/philox.h"
#include "reference/parallel_reference.h"
#include "reference/reference.h"
#include "reference/tp_rank.h"
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

// What recomputation does to a tensor that forward no longer keeps: its contents are gone
// (NaN, which any read would carry into the results) until backward computes them again.
static void discard(float *t, int64_t n) {
    for (int64_t i = 0; i < n; i++) t[i] = NAN;
}

// ---- Helpers -------------------------------------------------------------------------------------
// What crosses the boundary of the tensor-parallel region (tp_gather_tokens, tp_reduce_tokens),
// dropout on a slice (tp_dropout_at) and a bias's gradient over the rank's tokens
// (tp_column_sums) are in reference/tp_reference.h: the serial layer's backward pass
// (tp_serial_backward, the graded exercise "tp_backward") uses them too.

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
// What one rank holds: TpSerialRank (reference/tp_rank.h). The backward pass is tp_serial_backward
// (the graded exercise "tp_backward": docs/exercises.md).

static void serial_alloc(const LayerConfig *c, int tp, int64_t Tl, TpSerialRank *k) {
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

static void serial_free(TpSerialRank *k) {
    float *all[] = {k->x_loc, k->dout_loc, k->a_loc, k->ln1_mean, k->ln1_rstd, k->a, k->qkv, k->probs,
                    k->ctx, k->p, k->p_loc, k->y_loc, k->b_loc, k->ln2_mean, k->ln2_rstd, k->b,
                    k->fc1, k->gelu, k->o, k->out_loc, k->dout, k->d_gelu, k->d_fc1, k->d_ln2,
                    k->d_ln2_loc, k->dy_loc, k->d_proj_loc, k->d_proj, k->d_ctx, k->d_qkv, k->d_ln1,
                    k->d_ln1_loc, k->dx_loc};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
}

static void serial_train_step(const LayerConfig *c, int tp, const TpVariant *v, TpSerialRank *ranks, int64_t Tl,
                              uint64_t step) {
    const int sp = v->sequence_parallel;
    const int64_t T = layer_tokens(c);
    const int h = c->hidden, hl = h / tp, fl = c->ffn / tp, Hl = c->heads / tp, d = layer_head_dim(c);
    const uint64_t attn_off = dropout_offset(step, DROPOUT_SITE_ATTENTION);
    const uint64_t hid_off = dropout_offset(step, DROPOUT_SITE_HIDDEN);

    // ---- forward
    for (int r = 0; r < tp; r++) {  // LN1 on the rank's tokens
        TpSerialRank *k = &ranks[r];
        ref_layernorm_forward(k->x_loc, k->w.tensor[P_LN1_WEIGHT], k->w.tensor[P_LN1_BIAS], Tl, h, c->eps, k->a_loc,
                              k->ln1_mean, k->ln1_rstd);
    }
    TP_GATHER_TOKENS(ranks, tp, sp, a_loc, a, Tl * h);
    for (int r = 0; r < tp; r++) {  // QKV (column-parallel: its heads), attention, Proj partial
        TpSerialRank *k = &ranks[r];
        float *const *w = k->w.tensor;
        ref_linear_forward(k->a, w[P_QKV_WEIGHT], w[P_QKV_BIAS], T, h, 3 * hl, k->qkv);
        ref_attention_forward_heads(k->qkv, c->seq, c->batch, Hl, d, r * Hl, c->heads, c->attn_dropout, c->causal,
                                    c->seed, attn_off, k->ctx, k->probs);
        ref_linear_forward(k->ctx, w[P_PROJ_WEIGHT], NULL, T, hl, h, k->p);  // no bias: partial
    }
    TP_REDUCE_TOKENS(ranks, tp, sp, p, p_loc, Tl * h);
    for (int r = 0; r < tp; r++) {  // bias once, dropout, residual, LN2 on the rank's tokens
        TpSerialRank *k = &ranks[r];
        float *const *w = k->w.tensor;
        const uint64_t first = sp ? (uint64_t)(r * Tl * h) : 0;  // the slice's place in [T, h]
        for (int64_t i = 0; i < Tl * h; i++) k->p_loc[i] += w[P_PROJ_BIAS][i % h];
        tp_dropout_at(k->p_loc, Tl * h, c->hidden_dropout, c->seed, hid_off, first, k->y_loc);
        for (int64_t i = 0; i < Tl * h; i++) k->y_loc[i] += k->x_loc[i];
        ref_layernorm_forward(k->y_loc, w[P_LN2_WEIGHT], w[P_LN2_BIAS], Tl, h, c->eps, k->b_loc, k->ln2_mean,
                              k->ln2_rstd);
    }
    TP_GATHER_TOKENS(ranks, tp, sp, b_loc, b, Tl * h);
    for (int r = 0; r < tp; r++) {  // FC1 (column-parallel), GELU, FC2 partial
        TpSerialRank *k = &ranks[r];
        float *const *w = k->w.tensor;
        ref_linear_forward(k->b, w[P_FC1_WEIGHT], w[P_FC1_BIAS], T, h, fl, k->fc1);
        ref_gelu_forward(k->fc1, T * fl, k->gelu);
        ref_linear_forward(k->gelu, w[P_FC2_WEIGHT], NULL, T, fl, h, k->o);
    }
    TP_REDUCE_TOKENS(ranks, tp, sp, o, out_loc, Tl * h);
    for (int r = 0; r < tp; r++) {  // bias once, residual
        TpSerialRank *k = &ranks[r];
        for (int64_t i = 0; i < Tl * h; i++) k->out_loc[i] += k->w.tensor[P_FC2_BIAS][i % h] + k->y_loc[i];
    }

    if (v->recompute_gelu) {  // GELU's output not kept: again from FC1's, for FC2's wgrad
        for (int r = 0; r < tp; r++) discard(ranks[r].gelu, T * fl);
        for (int r = 0; r < tp; r++) ref_gelu_forward(ranks[r].fc1, T * fl, ranks[r].gelu);
    }

    if (v->recompute_layernorm) {  // LN1's and LN2's outputs not kept: again from x and y, gathered again
        for (int r = 0; r < tp; r++) {
            TpSerialRank *k = &ranks[r];
            discard(k->a_loc, Tl * h), discard(k->a, T * h), discard(k->b_loc, Tl * h), discard(k->b, T * h);
        }
        for (int r = 0; r < tp; r++) {
            TpSerialRank *k = &ranks[r];
            float *const *w = k->w.tensor;
            ref_layernorm_forward(k->x_loc, w[P_LN1_WEIGHT], w[P_LN1_BIAS], Tl, h, c->eps, k->a_loc, k->ln1_mean,
                                  k->ln1_rstd);
            ref_layernorm_forward(k->y_loc, w[P_LN2_WEIGHT], w[P_LN2_BIAS], Tl, h, c->eps, k->b_loc, k->ln2_mean,
                                  k->ln2_rstd);
        }
        TP_GATHER_TOKENS(ranks, tp, sp, a_loc, a, Tl * h);
        TP_GATHER_TOKENS(ranks, tp, sp, b_loc, b, Tl * h);
    }

    // ---- backward (a graded exercise: which buffers need an all-reduce, and where)
    tp_serial_backward(c, tp, sp, ranks, step);
    TP_RANK_BUFS(g_ln1w, ranks, tp, g.tensor[P_LN1_WEIGHT]);
    TP_RANK_BUFS(g_ln1b, ranks, tp, g.tensor[P_LN1_BIAS]);
    TP_RANK_BUFS(g_ln2w, ranks, tp, g.tensor[P_LN2_WEIGHT]);
    TP_RANK_BUFS(g_ln2b, ranks, tp, g.tensor[P_LN2_BIAS]);
    TP_RANK_BUFS(g_projb, ranks, tp, g.tensor[P_PROJ_BIAS]);
    TP_RANK_BUFS(g_fc2b, ranks, tp, g.tensor[P_FC2_BIAS]);
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

    // ---- forward: one collective
    for (int r = 0; r < tp; r++) {
        ParallelRank *k = &ranks[r];
        ref_layernorm_forward(k->x_loc, k->w.ln_weight, k->w.ln_bias, Tl, h, c->eps, k->a_loc, k->mean, k->rstd);
    }
    TP_GATHER_TOKENS(ranks, tp, sp, a_loc, a, Tl * h);
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
    TP_REDUCE_TOKENS(ranks, tp, sp, z, z_loc, Tl * h);
    for (int r = 0; r < tp; r++) {  // bias once, dropout, residual
        ParallelRank *k = &ranks[r];
        const uint64_t first = sp ? (uint64_t)(r * Tl * h) : 0;
        for (int64_t i = 0; i < Tl * h; i++) k->z_loc[i] += k->w.b_out[i % h];
        tp_dropout_at(k->z_loc, Tl * h, c->hidden_dropout, c->seed, hid_off, first, k->out_loc);
        for (int64_t i = 0; i < Tl * h; i++) k->out_loc[i] += k->x_loc[i];
    }

    if (v->recompute_gelu) {  // g not kept: [ctx | g] keeps ctx only, g comes again from h1 for W_out's wgrad
        for (int r = 0; r < tp; r++) {
            ParallelRank *k = &ranks[r];
            discard(k->gl, T * fl);
            for (int64_t t = 0; t < T; t++) discard(k->cat + t * k_out + hl, fl);
        }
        for (int r = 0; r < tp; r++) {
            ParallelRank *k = &ranks[r];
            ref_gelu_forward(k->h1, T * fl, k->gl);
            columns(k->cat, T, k_out, hl, fl, k->gl, 0);
        }
    }

    if (v->recompute_layernorm) {  // LN's output not kept: again from x, gathered again for W_in's wgrad
        for (int r = 0; r < tp; r++) discard(ranks[r].a_loc, Tl * h), discard(ranks[r].a, T * h);
        for (int r = 0; r < tp; r++) {
            ParallelRank *k = &ranks[r];
            ref_layernorm_forward(k->x_loc, k->w.ln_weight, k->w.ln_bias, Tl, h, c->eps, k->a_loc, k->mean, k->rstd);
        }
        TP_GATHER_TOKENS(ranks, tp, sp, a_loc, a, Tl * h);
    }

    // ---- backward: one collective
    for (int r = 0; r < tp; r++) {
        ParallelRank *k = &ranks[r];
        const uint64_t first = sp ? (uint64_t)(r * Tl * h) : 0;
        tp_dropout_at(k->dout_loc, Tl * h, c->hidden_dropout, c->seed, hid_off, first, k->dz_loc);
        tp_column_sums(k->dz_loc, Tl, h, k->g.b_out);
    }
    TP_GATHER_TOKENS(ranks, tp, sp, dz_loc, dz, Tl * h);
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
    TP_REDUCE_TOKENS(ranks, tp, sp, da, da_loc, Tl * h);
    for (int r = 0; r < tp; r++) {
        ParallelRank *k = &ranks[r];
        ref_layernorm_backward(k->da_loc, k->x_loc, k->w.ln_weight, k->mean, k->rstd, Tl, h, k->dx_loc,
                               k->g.ln_weight, k->g.ln_bias);
        for (int64_t i = 0; i < Tl * h; i++) k->dx_loc[i] += k->dout_loc[i];
    }
    TP_RANK_BUFS(g_lnw, ranks, tp, g.ln_weight);
    TP_RANK_BUFS(g_lnb, ranks, tp, g.ln_bias);
    TP_RANK_BUFS(g_bout, ranks, tp, g.b_out);
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
        TpSerialRank *ranks = xcalloc((size_t)tp, sizeof(TpSerialRank));
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
