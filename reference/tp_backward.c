// The backward pass of step 07's serial layer on tp ranks (reference/tp_rank.h), for plain TP
// and sequence parallelism: the reference solution of the exercise "tp_backward".
//
// Which buffers the ranks exchange, and where (Megatron-LM, Shoeybi et al. 2019; sequence
// parallelism: Korthikanti et al. 2022):
//   - A column-parallel linear's input gradient dx = dy W sums over its output features, of
//     which a rank holds only its slice: a PARTIAL sum. The ranks' total is needed by the op
//     before it (LN2, LN1): all-reduce (plain TP) or reduce-scatter (sp) - tp_reduce_tokens.
//   - A row-parallel linear's input gradient dy W[:, r] is complete for the rank's slice: it
//     needs every token of dy, which plain TP has and sp all-gathers - tp_gather_tokens.
//   - Parameter gradients: a shard's is the rank's own. A replicated parameter's is computed
//     from replicated tensors (dout, the reduced d_ln2 and d_ln1, y, x), the same on every
//     rank: no all-reduce in plain TP (one would make it tp times too large). Under sp each
//     rank sees only its tokens; the caller all-reduces them (tp_layer_reference.c).
// Every phase is a loop over the ranks ("each GPU does this on its own data"); a rank reads
// another rank's buffer only through a collective.
#include <stdint.h>

#include "common/core/philox.h"
#include "reference/reference.h"
#include "reference/tp_rank.h"
#include "reference/tp_reference.h"

void tp_serial_backward(const LayerConfig *c, int tp, int sequence_parallel, TpSerialRank *ranks,
                        uint64_t step) {
    const int sp = sequence_parallel;
    const int64_t T = layer_tokens(c), Tl = sp ? T / tp : T;
    const int h = c->hidden, hl = h / tp, fl = c->ffn / tp, Hl = c->heads / tp, d = layer_head_dim(c);
    const uint64_t attn_off = dropout_offset(step, DROPOUT_SITE_ATTENTION);
    const uint64_t hid_off = dropout_offset(step, DROPOUT_SITE_HIDDEN);

    TP_GATHER_TOKENS(ranks, tp, sp, dout_loc, dout, Tl * h);  // FC2's backward needs dy of every token
    for (int r = 0; r < tp; r++) {  // FC2 (row-parallel: its input gradient is local), GELU, FC1
        TpSerialRank *k = &ranks[r];
        float *const *w = k->w.tensor;
        float **g = k->g.tensor;
        ref_linear_backward(k->dout, k->gelu, w[P_FC2_WEIGHT], T, fl, h, k->d_gelu, g[P_FC2_WEIGHT], NULL);
        tp_column_sums(k->dout_loc, Tl, h, g[P_FC2_BIAS]);  // the rank's tokens: all of them in plain TP
        ref_gelu_backward(k->d_gelu, k->fc1, T * fl, k->d_fc1);
        ref_linear_backward(k->d_fc1, k->b, w[P_FC1_WEIGHT], T, h, fl, k->d_ln2, g[P_FC1_WEIGHT], g[P_FC1_BIAS]);
    }
    TP_REDUCE_TOKENS(ranks, tp, sp, d_ln2, d_ln2_loc, Tl * h);  // FC1's input gradient was partial
    for (int r = 0; r < tp; r++) {  // LN2, the residual y -> out, dropout: on the rank's tokens
        TpSerialRank *k = &ranks[r];
        float **g = k->g.tensor;
        const uint64_t first = sp ? (uint64_t)(r * Tl * h) : 0;  // the slice's place in [T, h]
        ref_layernorm_backward(k->d_ln2_loc, k->y_loc, k->w.tensor[P_LN2_WEIGHT], k->ln2_mean, k->ln2_rstd, Tl, h,
                               k->dy_loc, g[P_LN2_WEIGHT], g[P_LN2_BIAS]);
        for (int64_t i = 0; i < Tl * h; i++) k->dy_loc[i] += k->dout_loc[i];
        tp_dropout_at(k->dy_loc, Tl * h, c->hidden_dropout, c->seed, hid_off, first, k->d_proj_loc);
        tp_column_sums(k->d_proj_loc, Tl, h, g[P_PROJ_BIAS]);
    }
    TP_GATHER_TOKENS(ranks, tp, sp, d_proj_loc, d_proj, Tl * h);
    for (int r = 0; r < tp; r++) {  // Proj (row-parallel), attention on the rank's heads, QKV
        TpSerialRank *k = &ranks[r];
        float *const *w = k->w.tensor;
        float **g = k->g.tensor;
        ref_linear_backward(k->d_proj, k->ctx, w[P_PROJ_WEIGHT], T, hl, h, k->d_ctx, g[P_PROJ_WEIGHT], NULL);
        ref_attention_backward_heads(k->d_ctx, k->qkv, k->probs, c->seq, c->batch, Hl, d, r * Hl, c->heads,
                                     c->attn_dropout, c->causal, c->seed, attn_off, k->d_qkv);
        ref_linear_backward(k->d_qkv, k->a, w[P_QKV_WEIGHT], T, h, 3 * hl, k->d_ln1, g[P_QKV_WEIGHT],
                            g[P_QKV_BIAS]);
    }
    TP_REDUCE_TOKENS(ranks, tp, sp, d_ln1, d_ln1_loc, Tl * h);  // QKV's input gradient was partial
    for (int r = 0; r < tp; r++) {  // LN1 and the residual x -> y, on the rank's tokens
        TpSerialRank *k = &ranks[r];
        ref_layernorm_backward(k->d_ln1_loc, k->x_loc, k->w.tensor[P_LN1_WEIGHT], k->ln1_mean, k->ln1_rstd, Tl, h,
                               k->dx_loc, k->g.tensor[P_LN1_WEIGHT], k->g.tensor[P_LN1_BIAS]);
        for (int64_t i = 0; i < Tl * h; i++) k->dx_loc[i] += k->dy_loc[i];
    }
}
