// Step 06's parallel layer on one tensor-parallel rank:
//
//   out = x + Dropout(Attn(a) + MLP(a)),  a = LN(x)
//
// with step 06's two fused GEMMs cut Megatron-style, so that the whole layer is ONE
// column-parallel / row-parallel pair:
//
//   LN      replicated
//   W_in    column-parallel: [W_qkv rows of this rank's heads ; W_fc1 rows r], one GEMM with
//           N = 3h/tp + f/tp; attention on its heads and GELU on its ffn/tp features read
//           their columns of the output
//   W_out   row-parallel: [W_proj columns of its heads | W_fc2 columns r], one GEMM with
//           K = h/tp + f/tp on [ctx | GELU(h1)]: the two branches' partial outputs, already
//           added; b_out = b_proj + b_fc2 once, after the sum
//
// Plain TP: one all-reduce forward (after W_out) and one backward (W_in's partial input
// gradient, started after W_in's dgrad GEMM and overlapped with its wgrad GEMM) where the
// serial layer needs two each. Sequence parallelism: the same with an all-gather before W_in
// and a reduce-scatter after W_out (backward: all-gather of the output gradient, all-gather
// of LN's output again for W_in's wgrad under SP_REGATHER, beside W_in's dgrad, and
// reduce-scatter of LN's input gradient, beside W_in's wgrad), and the gradients of gamma,
// beta, b_out all-reduced (one NCCL group, started). The all-gathers before W_in's fprop and
// W_out's dgrad run beside the GEMM on the rank's own tokens (sp_gather.h).
//
// Attention reads its q, k, v columns in place (a row stride and a head range in one
// AttentionProblem) and writes ctx straight into [ctx | g]; GELU reads and writes its columns
// in place too: no copies.
//
// --recompute-gelu: g = GELU(h1) is not kept. Attention writes ctx into a kept [T, h/tp] tensor
// of its own; [ctx | g] is put together in backward's d_cat buffer (forward does not use it)
// for W_out's fprop, and again in backward (ctx copied, g computed again from h1, which GELU's
// backward keeps anyway) for W_out's wgrad, which then runs before its dgrad; attention's
// backward reads its output gradient as a packed copy. Kept: [T, f/tp] less; three [T, h/tp]
// copies more per step; the same numbers (expected bit for bit: gpu_run.sh tp compares).
// Shapes: T tokens, h hidden, f ffn; activations in cfg->dtype. CPU twin:
// reference/tp_layer_reference.c (parallel_train_step); weights: reference/tp_reference.h
// (TpFusedShard).
#ifndef STEPS_07_TENSOR_PARALLEL_TP_PARALLEL_LAYER_H
#define STEPS_07_TENSOR_PARALLEL_TP_PARALLEL_LAYER_H

#include <stddef.h>
#include <stdint.h>

#include "common/core/layer.h"
#include "modules/layernorm.h"
#include "modules/linear.h"
#include "steps/07_tensor_parallel/layer_comm.h"

typedef struct {
    LayerConfig cfg;
    int tp, rank, sequence_parallel;
    int hl, fl, heads_local, first_head;
    int n_in, k_out;                   // 3 hl + fl, hl + fl
    int64_t T, Tl;                     // tokens; tokens of the rank's slice
    TpSchedule sched;                  // SP: LN's gathered output kept or gathered again; forward's blocks
    LayerNorm ln;                      // on Tl rows
    Linear in;                         // [n_in, h] + b_in
    Linear out;                        // [h, k_out], no bias: added after the sum
    void *b_out, *db_out;              // [h], replicated
    void *db_workspace;                // bias_grad_columns' partial sums (bias_epilogue.h)
    // Forward (the *_loc tensors are the whole ones under plain TP).
    void *a_loc, *a;                   // LN's output [Tl, h]; gathered [T, h] (W_in's input)
                                       // (--recompute-layernorm: a_loc IS dz_loc, recomputed in backward)
    void *in_out;                      // [T, n_in] = [q k v | h1]
    float *lse;
    void *cat;                         // [T, k_out] = [ctx | GELU(h1)] (--recompute-gelu: d_cat, not kept)
    void *ctx;                         // --recompute-gelu: ctx kept alone, packed [T, h/tp]; else NULL
    void *z, *z_loc;                   // W_out's partial [T, h]; summed [Tl, h]
    void *y;                           // [Tl, h]: the output
    // Backward.
    void *dz_loc, *dz;                 // [Tl, h]; gathered [T, h] (SP_REGATHER: the buffer of a, in turns)
    void *d_cat, *d_in;
    void *d_a, *d_a_loc;               // LN's output gradient: partial [T, h]; summed [Tl, h]
    void *dx;                          // [Tl, h]
    void *attn_scratch;
    size_t activation_bytes;           // kept for backward, the layer's input x included
} TpParallelLayer;

// shard: this rank's parameters in the separate layout (tp_shard_params); fused here.
void tp_parallel_layer_init(TpParallelLayer *m, const LayerConfig *cfg, int tp, int rank, int sequence_parallel,
                            const TpSchedule *sched, const LayerParams *shard);
void tp_parallel_layer_free(TpParallelLayer *m);
// x: [Tl, h]. Writes m->y.
void tp_parallel_layer_forward(TpParallelLayer *m, LayerComm *lc, const void *x, uint64_t step);
// dout: [Tl, h]. Writes m->dx. Under SP the all-reduce of the replicated parameters'
// gradients is still running when it returns (layer_join_side).
void tp_parallel_layer_backward(TpParallelLayer *m, LayerComm *lc, const void *dout, uint64_t step);
// This rank's gradients in the separate layout, shard shapes (tp_unfuse_shard_grads: both
// output biases get b_out's gradient, ln2's is zero), as ref_parallel_train_step gives them.
void tp_parallel_layer_read_grads(const TpParallelLayer *m, LayerParams *grads);

#endif  // STEPS_07_TENSOR_PARALLEL_TP_PARALLEL_LAYER_H
