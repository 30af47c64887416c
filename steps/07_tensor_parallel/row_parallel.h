// The forward of a row-parallel Linear under plain TP, and its all-reduce, optionally
// pipelined (--fprop-chunks N):
//
//   partial [T, out] = x [T, in_local] W[:, r]^T      this rank's part of the sum
//   partial = sum over the ranks                       all-reduce, in place
//
// chunks = 1: one GEMM, then the all-reduce in line: the forward waits for the whole of it.
// chunks = N > 1: the GEMM in N blocks of T/N rows; each block's all-reduce is STARTED (on the
// side stream, layer_comm.h) as soon as its rows are written, while the next block's GEMM
// runs. Only the last block's all-reduce is left for the layer to wait for: up to (N-1)/N of
// the forward's all-reduce hidden behind its GEMM, for the price of N smaller GEMMs and N
// smaller all-reduces (each at a lower bus bandwidth, and sharing the GPU with the GEMM).
// Row blocks can be summed apart because the all-reduce is elementwise. (The idea of
// Transformer Engine's userbuffers overlap and Megatron-LM's tp-comm-overlap, in its
// simplest form: whole NCCL calls per block, no ring of point-to-point copies.)
// With --no-overlap the blocks' all-reduces run in line (the cost of the cutting alone).
//
// Returns with the default stream ordered after every block's sum. The Linear's wgrad then
// reads the whole x, as after linear_forward. No bias: the caller adds it once, after the sum.
#ifndef STEPS_07_TENSOR_PARALLEL_ROW_PARALLEL_H
#define STEPS_07_TENSOR_PARALLEL_ROW_PARALLEL_H

#include <stdint.h>

#include "common/core/layer.h"
#include "modules/linear.h"
#include "reference/tp_layer_reference.h"
#include "steps/07_tensor_parallel/layer_comm.h"

#define ROW_PARALLEL_MAX_CHUNKS 16

// NULL if T tokens can be cut in `chunks` blocks (T divisible by chunks), else why not.
const char *row_parallel_chunks_problem(int64_t tokens, int chunks);

// What every tensor-parallel module's init checks first: the layer can be cut into `tp` ranks
// as variant v asks (tp_variant_problem), and the schedule fits it - --fprop-chunks is plain
// TP's (sequence parallelism has a reduce-scatter there) and must divide the tokens. Stops
// with a message naming what is wrong (fail_user) where not.
void tp_require_valid_schedule(const LayerConfig *c, int tp, const TpVariant *v, const TpSchedule *sched);

// x [T, l->in], partial [T, l->out], both in l->dtype; l has no bias.
void row_parallel_forward_all_reduce(Linear *l, LayerComm *lc, const void *x, void *partial, int64_t tokens,
                                     int chunks);

#endif  // STEPS_07_TENSOR_PARALLEL_ROW_PARALLEL_H
