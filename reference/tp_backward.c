// The backward pass of step 07's CPU simulation: the reference solution of the exercise
// "tp_backward". Megatron-LM (Shoeybi et al. 2019): a column-parallel linear's input gradient
// dx = dy W sums over its output features, of which a rank holds only its slice, so it is a
// partial sum that must be all-reduced (here at LN2's and LN1's outputs); a row-parallel
// linear's input gradient dy W[:, r] is complete for the rank's slice. The parameters'
// gradients need no all-reduce: a shard's gradient is the rank's own, and a replicated
// parameter's is computed from replicated tensors, the same on every rank.
#include <stdint.h>

#include "common/core/philox.h"
#include "reference/reference.h"
#include "reference/tp_rank.h"

void tp_sim_backward(const LayerConfig *c, int tp, TpRank *ranks, const float *x, const float *dout,
                     uint64_t step) {
    const int64_t T = layer_tokens(c);
    const int h = c->hidden, hl = h / tp, fl = c->ffn / tp, Hl = c->heads / tp, d = layer_head_dim(c);
    const uint64_t attn_off = dropout_offset(step, DROPOUT_SITE_ATTENTION);
    const uint64_t hid_off = dropout_offset(step, DROPOUT_SITE_HIDDEN);
    for (int r = 0; r < tp; r++) {  // FC2 (row-parallel: dx is local), GELU, FC1 (dx partial)
        TpRank *k = &ranks[r];
        float *const *w = k->w.tensor;
        float **g = k->g.tensor;
        // db2 = sum of dout: the same on every rank (dout is replicated).
        ref_linear_backward(dout, k->gelu, w[P_FC2_WEIGHT], T, fl, h, k->d_gelu, g[P_FC2_WEIGHT], g[P_FC2_BIAS]);
        ref_gelu_backward(k->d_gelu, k->fc1, T * fl, k->d_fc1);
        ref_linear_backward(k->d_fc1, k->ln2_out, w[P_FC1_WEIGHT], T, h, fl, k->d_ln2, g[P_FC1_WEIGHT], g[P_FC1_BIAS]);
    }
    TP_ALL_REDUCE(ranks, tp, d_ln2, T * h);
    for (int r = 0; r < tp; r++) {  // LN2 (replicated), residual, dropout, proj (row-parallel), attention, QKV
        TpRank *k = &ranks[r];
        float *const *w = k->w.tensor;
        float **g = k->g.tensor;
        ref_layernorm_backward(k->d_ln2, k->y, w[P_LN2_WEIGHT], k->ln2_mean, k->ln2_rstd, T, h, k->dy,
                               g[P_LN2_WEIGHT], g[P_LN2_BIAS]);
        for (int64_t i = 0; i < T * h; i++) k->dy[i] += dout[i];
        ref_dropout_backward(k->dy, T * h, c->hidden_dropout, c->seed, hid_off, k->d_proj);
        ref_linear_backward(k->d_proj, k->ctx, w[P_PROJ_WEIGHT], T, hl, h, k->d_ctx, g[P_PROJ_WEIGHT], g[P_PROJ_BIAS]);
        ref_attention_backward_heads(k->d_ctx, k->qkv, k->probs, c->seq, c->batch, Hl, d, r * Hl, c->heads,
                                     c->attn_dropout, c->causal, c->seed, attn_off, k->d_qkv);
        ref_linear_backward(k->d_qkv, k->ln1_out, w[P_QKV_WEIGHT], T, h, 3 * hl, k->d_ln1, g[P_QKV_WEIGHT], g[P_QKV_BIAS]);
    }
    TP_ALL_REDUCE(ranks, tp, d_ln1, T * h);
    for (int r = 0; r < tp; r++) {  // LN1 (replicated) and the residual
        TpRank *k = &ranks[r];
        ref_layernorm_backward(k->d_ln1, x, k->w.tensor[P_LN1_WEIGHT], k->ln1_mean, k->ln1_rstd, T, h, k->dx,
                               k->g.tensor[P_LN1_WEIGHT], k->g.tensor[P_LN1_BIAS]);
        for (int64_t i = 0; i < T * h; i++) k->dx[i] += k->dy[i];
    }
}
