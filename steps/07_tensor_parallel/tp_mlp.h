// The MLP half of the serial layer on one tensor-parallel rank (Megatron-LM):
//
//   out = y + FC2(GELU(FC1(LN2(y))))
//
//   LN2    replicated: every rank normalises its tokens with the whole gamma, beta
//   FC1    column-parallel: rows [f r/tp, f (r+1)/tp) of W1, b1 (ffn/tp features per rank)
//   GELU   local
//   FC2    row-parallel: columns [f r/tp, f (r+1)/tp) of W2; a PARTIAL [T, h] output summed
//          across the ranks; the bias b2 (replicated) added once, after the sum
//
//   plain TP:              y, out are [T, h] on every rank; one all-reduce forward (after
//                          FC2), one backward (FC1's partial input gradient, started after
//                          FC1's dgrad GEMM and overlapped with its wgrad GEMM).
//   sequence parallelism:  y, out are the rank's [T/tp, h] slice: all-gather before FC1,
//                          reduce-scatter after FC2; backward all-gathers the output
//                          gradient, all-gathers LN2's output again for FC1's wgrad
//                          (SP_REGATHER: into fc2_out, started after FC2's dgrad, beside GELU's
//                          backward, FC2's wgrad and FC1's dgrad) and reduce-scatters FC1's partial
//                          input gradient (beside FC1's wgrad); the gradients of LN2's gamma,
//                          beta and of b2 are all-reduced (one NCCL group, started). The
//                          all-gathers before FC1's fprop and FC2's dgrad run beside the GEMM
//                          on the rank's own tokens (sp_gather.h).
//   --recompute-gelu:      GELU's output is not kept: forward writes it into backward's d_act
//                          buffer (FC2's fprop reads it there); backward runs FC2's dgrad as
//                          without the flag, then GELU's backward, which also writes GELU's
//                          output again over FC1's (kept for GELU's backward anyway, read there
//                          for the last time), where FC2's wgrad reads it. Kept: [T, fl] less;
//                          the same numbers, bit for bit (the same device function on the same
//                          input).
//
// Shapes: T = seq * batch tokens, h hidden, f ffn; all activations in cfg->dtype. The CPU
// twin is reference/tp_layer_reference.c (serial_train_step).
#ifndef STEPS_07_TENSOR_PARALLEL_TP_MLP_H
#define STEPS_07_TENSOR_PARALLEL_TP_MLP_H

#include <stddef.h>
#include <stdint.h>

#include "common/core/layer.h"
#include "modules/layernorm.h"
#include "modules/linear.h"
#include "steps/07_tensor_parallel/layer_comm.h"

typedef struct {
    LayerConfig cfg;
    int tp, rank, sequence_parallel;
    int fl;                        // this rank's share of ffn
    int64_t T, Tl;                 // tokens; tokens of the rank's slice (T/tp under SP, else T)
    TpSchedule sched;              // SP: LN2's gathered output kept or gathered again; forward's blocks
    LayerNorm ln2;                 // on Tl rows
    Linear fc1;                    // [fl, h] + bias
    Linear fc2;                    // [h, fl], no bias: added after the sum
    void *b2, *db2;                // [h], replicated
    void *db_workspace;            // bias_grad_columns' partial sums (bias_epilogue.h)
    // Forward. Under plain TP the *_loc tensors are the whole ones (the same buffers).
    void *ln_loc, *ln;             // LN2's output: [Tl, h]; gathered [T, h]
                                   // (--recompute-layernorm: ln_loc IS dx, recomputed in backward)
    void *fc1_out, *act;           // [T, fl]: FC1's output and GELU's (--recompute-gelu: act is
                                   // d_act, a buffer of backward's, not kept; backward computes
                                   // GELU's output again over fc1_out)
    void *fc2_out, *out;           // FC2's partial [T, h] (SP_REGATHER: in backward, LN2's output
                                   // gathered again); the output [Tl, h]
    // Backward.
    void *dout_gathered;           // the output gradient gathered [T, h] (SP only; under
                                   // SP_REGATHER the same buffer as ln, used in turns)
    void *d_act;                   // [T, fl]
    void *d_ln, *d_ln_loc;         // LN2's output gradient: partial [T, h]; summed [Tl, h]
    void *dx;                      // [Tl, h]
    size_t activation_bytes;       // what forward keeps for backward (LN2's input y is counted by
                                   // the attention half, which owns it)
} TpMlp;

// shard: this rank's parameters (tp_shard_params).
void tp_mlp_init(TpMlp *m, const LayerConfig *cfg, int tp, int rank, int sequence_parallel, const TpSchedule *sched,
                 const LayerParams *shard);
void tp_mlp_free(TpMlp *m);
// y: [Tl, h]. Writes m->out.
void tp_mlp_forward(TpMlp *m, LayerComm *lc, const void *y);
// dout: [Tl, h]. Writes m->dx (the residual path included). Under SP the all-reduce of the
// replicated parameters' gradients is still running when it returns (layer_join_side).
void tp_mlp_backward(TpMlp *m, LayerComm *lc, const void *dout);
// The gradients this rank holds, into shard-shaped host tensors (the MLP's 6 of the 12).
void tp_mlp_read_grads(const TpMlp *m, LayerParams *grads);

#endif  // STEPS_07_TENSOR_PARALLEL_TP_MLP_H
