// EXERCISE "tp_backward" (CPU, chapter 07; graded by tests/exercises/tp_backward_test.c:
// tools/grade.sh tp_backward).
//
// Step 07 cuts the layer across tp GPUs (steps/07_tensor_parallel/README.md, "How the layer
// is cut"); reference/tp_layer_reference.c simulates the tp ranks in one process. Its forward
// pass is written: every phase is a loop over the ranks, and where the ranks' results are
// partial sums (the row-parallel projections' outputs) the ranks exchange them through a
// simulated collective, as the GPUs call NCCL. This is the serial layer's backward pass
// (TpSerialRank, reference/tp_rank.h: what each rank holds), written below as if every rank
// had all it needs. It is right for tp = 1 and wrong for tp >= 2.
//
// Your job: find the buffers that are only PARTIAL on each rank and must be summed over the
// ranks before the next op reads them, split the loop there, and insert
//     TP_REDUCE_TOKENS(ranks, tp, sp, <[T, h] field>, <its [Tl, h] field>, <number of floats>);
// (reference/tp_reference.h: an all-reduce in plain TP; under sequence parallelism the
// reduce-scatter that leaves each rank its slice of the sum - you need not think about that
// case, it comes free.) Then ask the same question of each parameter gradient: does a rank's
// g[...] need the other ranks' contributions? (Each collective costs time on real GPUs: add
// none that is not needed - the tests check that the gradients are exactly right, not tp times
// too large.) The two TP_GATHER_TOKENS are given: in plain TP they copy, and they are not the
// answer.
// Hint: look at each ref_linear_backward. Its dx = dy W sums over the linear's OUTPUT
// features. Does this rank hold all of those, or only its slice?
// Check yourself: tools/grade.sh tp_backward compares dx and all 12 gradients with the
// unsharded reference (ref_layer_train_step) at tp 2, 3 and 6, and once with sequence
// parallelism.
#include <stdint.h>
#include <string.h>

#include "common/core/philox.h"
#include "reference/reference.h"
#include "reference/tp_rank.h"
#include "reference/tp_reference.h"

void tp_serial_backward(const LayerConfig *c, int tp, int sequence_parallel, TpSerialRank *ranks,
                        uint64_t step) {
    const int sp = sequence_parallel;
    const int64_t T = layer_tokens(c), Tl = sp ? T / tp : T;  // Tl: the rank's tokens (all T in plain TP)
    const int h = c->hidden, hl = h / tp, fl = c->ffn / tp, Hl = c->heads / tp, d = layer_head_dim(c);
    const uint64_t attn_off = dropout_offset(step, DROPOUT_SITE_ATTENTION);
    const uint64_t hid_off = dropout_offset(step, DROPOUT_SITE_HIDDEN);

    TP_GATHER_TOKENS(ranks, tp, sp, dout_loc, dout, Tl * h);  // FC2's backward needs dy of every token
    for (int r = 0; r < tp; r++) {  // each rank, on its own data (TODO: not all the way through)
        TpSerialRank *k = &ranks[r];
        float *const *w = k->w.tensor;
        float **g = k->g.tensor;
        const int64_t first = sp ? r * Tl : 0;  // the rank's first token
        // FC2 (row-parallel: this rank holds fl of its ffn input columns), GELU, FC1
        // (column-parallel: this rank holds fl of its ffn output rows).
        ref_linear_backward(k->dout, k->gelu, w[P_FC2_WEIGHT], T, fl, h, k->d_gelu, g[P_FC2_WEIGHT], NULL);
        tp_column_sums(k->dout_loc, Tl, h, g[P_FC2_BIAS]);  // FC2's bias: over the rank's tokens
        ref_gelu_backward(k->d_gelu, k->fc1, T * fl, k->d_fc1);
        ref_linear_backward(k->d_fc1, k->b, w[P_FC1_WEIGHT], T, h, fl, k->d_ln2, g[P_FC1_WEIGHT], g[P_FC1_BIAS]);
        // LN2 (replicated), the residual y -> out and dropout, on the rank's tokens of d_ln2.
        memcpy(k->d_ln2_loc, k->d_ln2 + first * h, (size_t)(Tl * h) * sizeof(float));
        ref_layernorm_backward(k->d_ln2_loc, k->y_loc, w[P_LN2_WEIGHT], k->ln2_mean, k->ln2_rstd, Tl, h, k->dy_loc,
                               g[P_LN2_WEIGHT], g[P_LN2_BIAS]);
        for (int64_t i = 0; i < Tl * h; i++) k->dy_loc[i] += k->dout_loc[i];
        tp_dropout_at(k->dy_loc, Tl * h, c->hidden_dropout, c->seed, hid_off, (uint64_t)(first * h),
                      k->d_proj_loc);
        tp_column_sums(k->d_proj_loc, Tl, h, g[P_PROJ_BIAS]);  // Proj's bias
    }
    TP_GATHER_TOKENS(ranks, tp, sp, d_proj_loc, d_proj, Tl * h);  // Proj's backward needs every token
    for (int r = 0; r < tp; r++) {  // each rank, on its own data (TODO: not all the way through)
        TpSerialRank *k = &ranks[r];
        float *const *w = k->w.tensor;
        float **g = k->g.tensor;
        const int64_t first = sp ? r * Tl : 0;
        // Proj (row-parallel: this rank's hl input columns), attention on this rank's Hl heads,
        // QKV (column-parallel: this rank's 3 hl output rows).
        ref_linear_backward(k->d_proj, k->ctx, w[P_PROJ_WEIGHT], T, hl, h, k->d_ctx, g[P_PROJ_WEIGHT], NULL);
        ref_attention_backward_heads(k->d_ctx, k->qkv, k->probs, c->seq, c->batch, Hl, d, r * Hl, c->heads,
                                     c->attn_dropout, c->causal, c->seed, attn_off, k->d_qkv);
        ref_linear_backward(k->d_qkv, k->a, w[P_QKV_WEIGHT], T, h, 3 * hl, k->d_ln1, g[P_QKV_WEIGHT], g[P_QKV_BIAS]);
        // LN1 (replicated) and the residual x -> y, on the rank's tokens of d_ln1.
        memcpy(k->d_ln1_loc, k->d_ln1 + first * h, (size_t)(Tl * h) * sizeof(float));
        ref_layernorm_backward(k->d_ln1_loc, k->x_loc, w[P_LN1_WEIGHT], k->ln1_mean, k->ln1_rstd, Tl, h, k->dx_loc,
                               g[P_LN1_WEIGHT], g[P_LN1_BIAS]);
        for (int64_t i = 0; i < Tl * h; i++) k->dx_loc[i] += k->dy_loc[i];
    }
}
