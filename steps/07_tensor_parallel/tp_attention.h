// The attention half of the serial layer on one tensor-parallel rank (Megatron-LM):
//
//   y = x + Dropout(Proj(Attn(QKV(LN1(x)))))
//
//   LN1    replicated: every rank normalises its tokens with the whole gamma, beta
//   QKV    column-parallel: rows [3h r/tp, 3h (r+1)/tp) of W_qkv, b_qkv = this rank's heads
//   Attn   local: heads [r H/tp, (r+1) H/tp), dropout keyed by the head's index in the layer
//   Proj   row-parallel: columns [h r/tp, h (r+1)/tp) of W_proj; a PARTIAL [T, h] output,
//          summed across the ranks; the bias b_proj (replicated) added once, after the sum
//
//   plain TP:              x, y are [T, h] on every rank. Forward: one all-reduce after
//                          Proj. Backward: one all-reduce of LN1's partial input gradient,
//                          started right after QKV's dgrad GEMM and overlapped with QKV's
//                          wgrad GEMM (layer_comm.h; --no-overlap runs it in line).
//   sequence parallelism:  x, y are the rank's [T/tp, h] slice of the sequence. Forward:
//                          all-gather LN1's output before QKV, reduce-scatter after Proj.
//                          Backward: all-gather Proj's output gradient; all-gather LN1's
//                          output again (SP_REGATHER: forward kept only the rank's slice),
//                          started after Proj's backward, beside attention's backward and
//                          QKV's dgrad; reduce-scatter LN1's partial input
//                          gradient, overlapped with QKV's wgrad; the gradients of gamma, beta
//                          and b_proj are partial sums over the rank's tokens: all-reduced (one
//                          NCCL group, started, joined at the end of the step). The all-gathers
//                          before QKV's fprop and Proj's dgrad run beside the GEMM on the
//                          rank's own tokens (sp_gather.h).
//
// Shapes: T = seq * batch tokens, h hidden; all activations in cfg->dtype. The CPU twin is
// reference/tp_layer_reference.c (serial_train_step).
#ifndef STEPS_07_TENSOR_PARALLEL_TP_ATTENTION_H
#define STEPS_07_TENSOR_PARALLEL_TP_ATTENTION_H

#include <stddef.h>
#include <stdint.h>

#include "common/core/layer.h"
#include "modules/layernorm.h"
#include "modules/linear.h"
#include "steps/07_tensor_parallel/layer_comm.h"

typedef struct {
    LayerConfig cfg;
    int tp, rank, sequence_parallel;
    int hl, heads_local, first_head;  // this rank's share of hidden (its heads * head_dim), its heads
    int64_t T, Tl;                    // tokens; tokens of the rank's slice (T/tp under SP, else T)
    TpSchedule sched;                 // SP: LN1's gathered output kept or gathered again; forward's blocks
    LayerNorm ln1;                    // on Tl rows
    Linear qkv;                       // [3 hl, h] + bias
    Linear proj;                      // [h, hl], no bias: added after the sum
    void *b_proj, *db_proj;           // [h], replicated
    void *db_workspace;               // bias_grad_columns' partial sums (bias_epilogue.h)
    // Forward. Under plain TP the *_loc tensors are the whole ones (the same buffers).
    void *ln_loc, *ln;                // LN1's output: the rank's [Tl, h]; gathered [T, h] (QKV's input)
                                      // (--recompute-layernorm: ln_loc IS d_proj_loc, recomputed in backward)
    void *qkv_out, *ctx;              // [T, 3 hl], [T, hl]
    float *lse;                       // [batch, heads_local, seq]
    void *proj_out, *proj_loc;        // Proj's partial [T, h]; summed [Tl, h]
    void *y;                          // [Tl, h]: the output
    // Backward.
    void *d_proj_loc, *d_proj;        // the gradient at Proj's output: [Tl, h]; gathered [T, h]. Under
                                      // SP_REGATHER d_proj IS ln: one [T, h] buffer, used in turns (LN1's
                                      // output in forward, the output gradient, LN1's output again)
    void *d_ctx, *d_qkv;              // [T, hl], [T, 3 hl]
    void *d_ln, *d_ln_loc;            // LN1's output gradient: partial [T, h]; summed [Tl, h]
    void *dx;                         // [Tl, h]
    void *attn_scratch;
    size_t activation_bytes;          // what forward keeps for backward (the layer's memory), the
                                      // layer's input x included (LN1's backward reads it)
} TpAttention;

// shard: this rank's parameters (tp_shard_params). Fails with a message if the config cannot
// be cut (tp_variant_problem) or attention cannot run it.
void tp_attention_init(TpAttention *m, const LayerConfig *cfg, int tp, int rank, int sequence_parallel,
                       const TpSchedule *sched, const LayerParams *shard);
void tp_attention_free(TpAttention *m);
// x: [Tl, h] (the rank's tokens). Writes m->y.
void tp_attention_forward(TpAttention *m, LayerComm *lc, const void *x, uint64_t step);
// dy: the gradient at y, [Tl, h] (the MLP half's dx: its residual path included). Writes m->dx.
// Under SP the all-reduce of the replicated parameters' gradients is still running when it
// returns: layer_join_side before reading them (tp_layer_train_step does).
void tp_attention_backward(TpAttention *m, LayerComm *lc, const void *dy, uint64_t step);
// The gradients this rank holds, into shard-shaped host tensors (the attention's 6 of the 12).
void tp_attention_read_grads(const TpAttention *m, LayerParams *grads);

#endif  // STEPS_07_TENSOR_PARALLEL_TP_ATTENTION_H
