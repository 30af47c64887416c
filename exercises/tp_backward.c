// EXERCISE "tp_backward" (CPU, chapter 07; graded by tests/exercises/tp_backward_test.c:
// tools/grade.sh tp_backward).
//
// Step 07 cuts the layer across tp GPUs (steps/07_tensor_parallel/README.md, "How the layer
// is cut"); reference/tp_reference.c simulates the tp ranks in one process. Its forward pass
// is written: every rank runs its own shard, and where the ranks' results are partial sums
// (the row-parallel projections' outputs) it calls TP_ALL_REDUCE (reference/tp_rank.h), as the
// GPUs call ncclAllReduce. This is its backward pass, written below as if every rank had all it
// needs. It is right for tp = 1 and wrong for tp >= 2.
//
// Your job: find the buffers that are only PARTIAL on each rank and must be summed over the
// ranks before the next op reads them, split the loop there, and insert
//     TP_ALL_REDUCE(ranks, tp, <field of TpRank>, <number of floats>);
// Then ask the same question of each parameter gradient: does a rank's g[...] need the other
// ranks' contributions? (Each all-reduce costs time on real GPUs: add none that is not needed -
// the tests check that the gradients are exactly right, not tp times too large.)
// Hint: look at each ref_linear_backward. Its dx = dy W sums over the linear's OUTPUT
// features. Does this rank hold all of those, or only its slice?
// Check yourself: tools/grade.sh tp_backward compares dx and all 12 gradients with the
// unsharded reference (ref_layer_train_step) at tp 2 and 3.
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
    for (int r = 0; r < tp; r++) {  // each rank, on its own data (TODO: not all the way through)
        TpRank *k = &ranks[r];
        float *const *w = k->w.tensor;
        float **g = k->g.tensor;
        // FC2 (row-parallel: this rank holds fl of its ffn input columns), GELU, FC1
        // (column-parallel: this rank holds fl of its ffn output rows).
        ref_linear_backward(dout, k->gelu, w[P_FC2_WEIGHT], T, fl, h, k->d_gelu, g[P_FC2_WEIGHT], g[P_FC2_BIAS]);
        ref_gelu_backward(k->d_gelu, k->fc1, T * fl, k->d_fc1);
        ref_linear_backward(k->d_fc1, k->ln2_out, w[P_FC1_WEIGHT], T, h, fl, k->d_ln2, g[P_FC1_WEIGHT], g[P_FC1_BIAS]);
        // LN2 (replicated) and the residual connection y -> out.
        ref_layernorm_backward(k->d_ln2, k->y, w[P_LN2_WEIGHT], k->ln2_mean, k->ln2_rstd, T, h, k->dy,
                               g[P_LN2_WEIGHT], g[P_LN2_BIAS]);
        for (int64_t i = 0; i < T * h; i++) k->dy[i] += dout[i];
        // Dropout, the projection (row-parallel: this rank's hl input columns), attention on this
        // rank's Hl heads, QKV (column-parallel: this rank's 3 hl output rows).
        ref_dropout_backward(k->dy, T * h, c->hidden_dropout, c->seed, hid_off, k->d_proj);
        ref_linear_backward(k->d_proj, k->ctx, w[P_PROJ_WEIGHT], T, hl, h, k->d_ctx, g[P_PROJ_WEIGHT], g[P_PROJ_BIAS]);
        ref_attention_backward_heads(k->d_ctx, k->qkv, k->probs, c->seq, c->batch, Hl, d, r * Hl, c->heads,
                                     c->attn_dropout, c->causal, c->seed, attn_off, k->d_qkv);
        ref_linear_backward(k->d_qkv, k->ln1_out, w[P_QKV_WEIGHT], T, h, 3 * hl, k->d_ln1, g[P_QKV_WEIGHT], g[P_QKV_BIAS]);
        // LN1 (replicated) and the residual connection x -> y.
        ref_layernorm_backward(k->d_ln1, x, w[P_LN1_WEIGHT], k->ln1_mean, k->ln1_rstd, T, h, k->dx,
                               g[P_LN1_WEIGHT], g[P_LN1_BIAS]);
        for (int64_t i = 0; i < T * h; i++) k->dx[i] += k->dy[i];
    }
}
