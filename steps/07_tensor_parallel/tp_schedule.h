// How step 07's layer schedules its work and what it keeps for backward (no CUDA here: the CPU
// tests read it too).
//
//   TpSchedule                  the schedule's choices; none changes a number the layer
//                               computes (tp_check passes for every one, and gpu_run.sh tp
//                               compares the saved results bit for bit)
//   tp_kept_activation_bytes    the bytes of the tensors forward keeps for backward on one
//                               rank, for a layer variant and a schedule: the chapter's table
//                               (README.md, "How much it can save at tp 2") as a function. The
//                               GPU modules count their own allocations (activation_bytes in
//                               tp_attention.c, tp_mlp.c, tp_parallel_layer.c);
//                               tests/tp/tp_modules_test.c checks that the two agree, and
//                               tests/tp/tp_activation_test.c checks the function's figures.
#ifndef STEPS_07_TENSOR_PARALLEL_TP_SCHEDULE_H
#define STEPS_07_TENSOR_PARALLEL_TP_SCHEDULE_H

#include <stddef.h>

#include "common/core/layer.h"
#include "reference/tp_layer_reference.h"

#ifdef __cplusplus
extern "C" {
#endif

// Sequence parallelism: where the weight gradient of a column-parallel GEMM (QKV, FC1, the
// parallel layer's fused W_in) finds the gathered [T, h] input it needs in backward.
typedef enum {
    SP_REGATHER = 0,       // forward keeps only the rank's [T/tp, h] slice of the LayerNorm's output;
                           // backward all-gathers it again (Megatron-LM's sequence parallelism)
    SP_KEEP_GATHERED = 1,  // forward keeps the gathered [T, h] (--keep-gathered): (tp-1)/tp of a [T, h]
                           // more per LayerNorm, one all-gather fewer each
} SpGatheredInput;

// How a layer schedules its work around the collectives, and what it keeps (none of it changes
// a number the layer computes; tp_check passes for every choice):
typedef struct {
    SpGatheredInput sp_input;  // sequence parallelism: the LayerNorm outputs gathered again (default) or kept
    int fprop_chunks;          // plain TP: the row-parallel forward's GEMM and all-reduce pipelined in
                               // this many row blocks (row_parallel.h); 1 (default): one GEMM, one all-reduce
    int recompute_gelu;        // 1 (--recompute-gelu): GELU's output is not kept for backward; the
                               // row-parallel GEMM's wgrad (FC2, the parallel layer's W_out) gets it
                               // computed again from FC1's output, kept for GELU's backward anyway
                               // (activation recomputation, Korthikanti et al. 2022's "selective" kind)
    int recompute_layernorm;   // 1 (--recompute-layernorm): no LayerNorm's output is kept for backward
                               // (LN1's, LN2's; the parallel layer's one): the column-parallel GEMM's
                               // wgrad (QKV, FC1, W_in) gets it from the same LayerNorm forward run
                               // again on the kept input (the same bits) into a buffer that holds
                               // nothing between forward and backward - under SP the rank's slice,
                               // then gathered again as without it; plain TP the whole [T, h].
                               // Not with SP_KEEP_GATHERED (which keeps the gathered copy)
} TpSchedule;

#define TP_SCHEDULE_DEFAULTS ((TpSchedule){SP_REGATHER, 1, 0, 0})

// NULL if the schedule's choices go together, else why not, in the flags' words
// (--recompute-layernorm with --keep-gathered: one recomputes what the other keeps).
const char *tp_schedule_problem(const TpSchedule *sched);

// Bytes kept for backward on one rank of tp, in c->dtype (2 bytes) plus the fp32 statistics:
// the layer's input x (LN1's backward reads it), each LayerNorm's output (its slice under
// sequence parallelism, and the gathered [T, h] with SP_KEEP_GATHERED; not with
// recompute_layernorm) and its mean and rstd (kept either way: LayerNorm's backward reads them),
// the column-parallel GEMMs' outputs (q, k, v and FC1's), attention's output and lse, LN2's
// input y, and GELU's output unless recomputed. The parallel layer: x, LN's output and
// statistics, [q k v | h1], lse and [ctx | g] (with recomputation ctx alone). sched: NULL for
// TP_SCHEDULE_DEFAULTS. The caller checks the cut first (tp_variant_problem).
size_t tp_kept_activation_bytes(const LayerConfig *c, int tp, const TpVariant *v, const TpSchedule *sched);

#ifdef __cplusplus
}
#endif

#endif  // STEPS_07_TENSOR_PARALLEL_TP_SCHEDULE_H
