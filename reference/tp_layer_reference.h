// The whole layer under tensor parallelism, simulated on the CPU: tp ranks in one process,
// each computing on its own shards, the collectives as in-process sums
// (reference/tp_reference.h). It is how step 07's variants are proven without a GPU: the
// sharded computation, gathered, must equal the unsharded reference.
//
// Four variants, two layers times two ways of treating the replicated part:
//
//   serial layer (step 04)     y = x + Dropout(Proj(Attn(QKV(LN1(x)))));  out = y + FC2(GELU(FC1(LN2(y))))
//                              two column-/row-parallel pairs (QKV->Proj, FC1->FC2):
//                              two collectives forward, two backward
//   parallel layer (step 06)   out = x + Dropout(Attn(a) + MLP(a)),  a = LN(x)
//                              ONE pair: the fused input GEMM [W_qkv ; W_fc1] column-parallel
//                              (by heads and by ffn), the fused output GEMM [W_proj | W_fc2]
//                              row-parallel: one collective forward, one backward
//
//   plain TP (Megatron-LM, Shoeybi et al. 2019): every rank holds all T tokens of x and
//     runs the LayerNorms, dropout and residuals itself (replicated); after each
//     row-parallel GEMM an all-reduce sums the partial [T, h] outputs; backward needs
//     collectives too: which, and where, is the exercise "tp_backward" (below).
//   sequence parallelism (Korthikanti et al. 2022, "Reducing Activation Recomputation in
//     Large Transformer Models"; TE's sequence_parallel=True): the replicated part runs on
//     each rank's slice of the sequence, tokens [r T/tp, (r+1) T/tp) (seq is the outer
//     dimension of [seq, batch, hidden], so a slice of the sequence is a contiguous block
//     of tokens). Entering a column-parallel GEMM the slices are ALL-GATHERED; leaving a
//     row-parallel one the partial outputs are REDUCE-SCATTERED (the same bytes as the
//     all-reduce, which is a reduce-scatter followed by an all-gather). Backward swaps
//     them. LayerNorm, dropout and the residual then store T/tp tokens instead of T.
//     Dropout on a slice keys each element by its index in the WHOLE tensor, so the masks
//     are the unsharded layer's.
//     The price: a replicated parameter (LayerNorm gamma and beta, the row-parallel biases)
//     now sees only its rank's tokens, so each rank's gradient is a partial sum: they must
//     be ALL-REDUCED. Without that all-reduce every rank applies a different update to what
//     should be one parameter, and the copies drift apart (tests/tp/tp_sim_test.c shows it).
//
// The serial layer's backward pass (tp_serial_backward, on the ranks of reference/tp_rank.h) is
// the graded exercise "tp_backward" (docs/exercises.md).
#ifndef REFERENCE_TP_LAYER_REFERENCE_H
#define REFERENCE_TP_LAYER_REFERENCE_H

#include <stdint.h>

#include "common/core/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    TP_LAYER_SERIAL = 0,    // step 04's layer
    TP_LAYER_PARALLEL = 1,  // step 06's parallel layer, fused weights
} TpLayerKind;

typedef struct {
    TpLayerKind layer;
    int sequence_parallel;
    // The classic mistake, for the test that shows it: under sequence parallelism, leave
    // the replicated parameters' gradients as each rank computed them (no all-reduce).
    int skip_replicated_grad_all_reduce;
    // Activation recomputation (the simulation's twin of step 07's --recompute-gelu,
    // TpSchedule.recompute_gelu): after the forward pass every rank throws GELU's output away
    // (overwritten with NaN, so that a read of the stale tensor shows), and computes it again
    // from FC1's output (the parallel layer: from h1) before the backward pass, for FC2's
    // (W_out's) wgrad. The same function of the same input: the results
    // are bit for bit those without it (tp_sim_test checks that).
    int recompute_gelu;
    // The same for every LayerNorm's output (step 07's --recompute-layernorm,
    // TpSchedule.recompute_layernorm): LN1's and LN2's (the parallel layer: its one LN's) output
    // slice and its gathered copy thrown away after the forward pass (NaN), computed again from
    // the kept input by the same LayerNorm forward and gathered again before the backward pass,
    // whose QKV / FC1 (W_in) weight gradient reads it. Bit for bit the same results.
    int recompute_layernorm;
} TpVariant;

// "serial", "parallel", "serial, sequence-parallel", "parallel, sequence-parallel".
const char *tp_variant_name(const TpVariant *v);

// NULL if the layer can be cut tp ways in this variant, else why not (tp_config_problem,
// and under sequence parallelism tp must divide seq).
const char *tp_variant_problem(const LayerConfig *cfg, int tp, const TpVariant *v);

// The unsharded CPU reference a variant must equal: ref_layer_train_step (serial) or
// ref_parallel_train_step (parallel).
typedef void (*LayerReferenceFn)(const LayerConfig *cfg, const LayerParams *params, const LayerInputs *in,
                                 uint64_t step, LayerResults *res);
LayerReferenceFn tp_variant_reference(const TpVariant *v);

// One training step of the layer cut tp ways, on per-rank parameters.
//   shards      tp LayerParams, rank r's shards in tp_shard_params' shapes (for the parallel
//               layer too: they are fused inside, tp_fuse_shard)
//   in          the whole x and dy ([T, h]); under sequence parallelism each rank reads only
//               its slice of them
//   out, dx     [T, h]: the ranks' results put together (each rank's slice under sequence
//               parallelism; rank 0's copy otherwise, all copies being equal)
//   rank_grads  tp LayerParams allocated here (free with layer_params_free), rank r's
//               gradients in shard shapes. Replicated parameters: each rank's own copy.
void tp_sim_train_step(const LayerConfig *cfg, int tp, const TpVariant *v, const LayerParams *shards,
                       const LayerInputs *in, uint64_t step, float *out, float *dx, LayerParams *rank_grads);

// The same from the unsharded parameters: sharded here, gradients gathered into res->grad
// (replicated ones from rank 0), comparable with tp_variant_reference(v). rank_grads: as
// above, or NULL.
void tp_sim_layer_train_step(const LayerConfig *cfg, int tp, const TpVariant *v, const LayerParams *params,
                             const LayerInputs *in, uint64_t step, LayerResults *res, LayerParams *rank_grads);

#ifdef __cplusplus
}
#endif

#endif  // REFERENCE_TP_LAYER_REFERENCE_H
