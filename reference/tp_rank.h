// One rank of step 07's CPU simulation (reference/tp_reference.c): what it holds, and the
// all-reduce of one of its buffers across all ranks. Shared by the simulation and its backward
// pass (reference/tp_backward.c, the graded exercise "tp_backward").
#ifndef REFERENCE_TP_RANK_H
#define REFERENCE_TP_RANK_H

#include <stdint.h>

#include "common/core/layer.h"
#include "reference/tp_reference.h"

#ifdef __cplusplus
extern "C" {
#endif

// What one rank holds: its parameter shards and its activations, float32, row-major. Sizes:
// T tokens, h hidden, f ffn, H heads; hl = h/tp, Hl = H/tp, fl = f/tp.
typedef struct {
    LayerParams w, g;                      // parameter shards (tp_shard_params) and their gradients
    // forward (tp_forward), saved for the backward
    float *ln1_out, *ln1_mean, *ln1_rstd;  // [T, h], [T], [T]: replicated
    float *qkv;                            // [T, 3 hl]: this rank's heads
    float *probs;                          // [b, Hl, s, s]
    float *ctx;                            // [T, hl]
    float *proj;                           // [T, h]: partial, then all-reduced
    float *y;                              // [T, h]: replicated
    float *ln2_out, *ln2_mean, *ln2_rstd;  // replicated
    float *fc1, *gelu;                     // [T, fl]
    float *out;                            // [T, h]: partial, then all-reduced
    // backward (tp_sim_backward): the gradient of the loss with respect to ...
    float *d_gelu, *d_fc1;                 // [T, fl]  ... GELU's output and input
    float *d_ln2;                          // [T, h]   ... LN2's output
    float *dy, *d_proj;                    // [T, h]   ... y, and the projection's output
    float *d_ctx;                          // [T, hl]  ... this rank's attention output
    float *d_qkv;                          // [T, 3 hl] ... this rank's q, k, v
    float *d_ln1;                          // [T, h]   ... LN1's output
    float *dx;                             // [T, h]   ... the layer's input x
} TpRank;

// ncclAllReduce(sum) of one buffer of every rank: ranks[r].field[0..n) for r = 0..tp-1 are
// replaced by their sum (tp_sim_all_reduce), e.g. TP_ALL_REDUCE(ranks, tp, proj, T * h).
#define TP_ALL_REDUCE(ranks, tp, field, n)                                 \
    do {                                                                   \
        float *bufs_[TP_MAX_RANKS] = {0};                                  \
        for (int r_ = 0; r_ < (tp); r_++) bufs_[r_] = (ranks)[r_].field;   \
        tp_sim_all_reduce(bufs_, (tp), (n));                               \
    } while (0)

// The layer's backward pass on tp ranks after tp_forward: dout [T, h] is the gradient
// arriving at the output (replicated: every rank has all of it), x [T, h] the layer's input.
// Writes every rank's gradient shards (ranks[r].g, overwritten) and its dx, which must equal
// the unsharded ref_layer_train_step's. The exercise "tp_backward".
void tp_sim_backward(const LayerConfig *cfg, int tp, TpRank *ranks, const float *x, const float *dout,
                     uint64_t step);

#ifdef __cplusplus
}
#endif

#endif  // REFERENCE_TP_RANK_H
