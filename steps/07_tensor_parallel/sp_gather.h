// Sequence parallelism's all-gather before a GEMM that reads all T tokens, overlapped with the
// part of that GEMM which needs only the rank's own tokens (the split pipelined all-gather of
// Transformer Engine's comm-GEMM overlap, in its simplest form):
//
//   start the all-gather of every rank's slice [T/tp, k] into full [T, k]   (side stream)
//   the GEMM on rows [r T/tp, (r+1) T/tp), reading the rank's own slice     (beside it)
//   wait for the all-gather (on the GPU); the GEMM on the other rows, reading full
//
// A GEMM's output rows depend only on the same input rows, so the row blocks compute what the
// whole GEMM would (each block as its own cuBLASLt call: the rounding can differ from one call
// over all T rows, so every schedule of sequence parallelism cuts them alike - with
// --no-overlap the all-gather runs in line first, and the blocks are the same).
// Two GEMMs take this shape:
//   SP_GEMM_FPROP  a column-parallel Linear's forward: y [T, out] = full [T, in] W^T + b
//                  (QKV, FC1, the parallel layer's W_in); afterwards the Linear's wgrad reads
//                  the whole full, as after linear_forward
//   SP_GEMM_DGRAD  a row-parallel Linear's input gradient: y [T, in] = full [T, out] W, full
//                  the gathered output gradient (Proj, FC2, W_out), which the caller's wgrad
//                  then reads
// full ends gathered, and the default stream ordered after the all-gather. Tensors in l->dtype.
#ifndef STEPS_07_TENSOR_PARALLEL_SP_GATHER_H
#define STEPS_07_TENSOR_PARALLEL_SP_GATHER_H

#include <stdint.h>

#include "modules/linear.h"
#include "steps/07_tensor_parallel/layer_comm.h"

typedef enum { SP_GEMM_FPROP, SP_GEMM_DGRAD } SpGemm;

// slice [T/tp, k] (this rank's tokens), full [T, k], y [T, n]; k, n: l->in, l->out for FPROP,
// l->out, l->in for DGRAD. tokens T, divisible by the world size.
void sp_gathered_gemm(Linear *l, SpGemm gemm, LayerComm *lc, const void *slice, void *full, void *y, int64_t tokens);

// The same GEMM in the same row blocks when full has been gathered already (the caller
// started the all-gather and waited for it, having had other work to put beside it: FC2's and
// W_out's backward under --recompute-gelu put GELU's recomputation there): the same bits as
// sp_gathered_gemm.
void sp_gemm_in_row_blocks(Linear *l, SpGemm gemm, LayerComm *lc, const void *slice, const void *full, void *y,
                           int64_t tokens);

// Where the rank's first token sits in the whole [T, h] tensor, as an element index (0 without
// sequence parallelism, where every rank holds all T tokens): a dropout mask drawn from there
// on is the unsharded layer's for the rank's tokens (Philox by element index).
static inline uint64_t sp_first_element(int sequence_parallel, int rank, int64_t tokens_local, int hidden) {
    return sequence_parallel ? (uint64_t)rank * (uint64_t)tokens_local * (uint64_t)hidden : 0;
}

#endif  // STEPS_07_TENSOR_PARALLEL_SP_GATHER_H
