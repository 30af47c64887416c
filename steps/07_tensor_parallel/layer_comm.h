// The collectives a tensor-parallel layer calls, in the layer's terms (device tensors of its
// dtype, sizes in elements), each one timed, plus the side stream that lets backward's
// all-reduces overlap independent GEMMs.
//
//   all-reduce      after a row-parallel GEMM (plain TP): the partial [T, h] outputs summed
//   all-gather      before a column-parallel GEMM (sequence parallelism): every rank's
//                   [T/tp, h] slice -> the whole [T, h]
//   reduce-scatter  after a row-parallel GEMM (sequence parallelism): the partial [T, h]
//                   outputs summed, each rank keeping its [T/tp, h] slice
//
// Timing: CUDA events around each collective, so that a step's time in communication can be
// read after the step has been synchronised (layer_comm_step_stats). They also count the
// time a rank waits for the slowest peer: part of what tensor parallelism costs.
// Bus bytes follow nccl-tests: an all-reduce moves 2 (n-1)/n of its bytes over each rank's
// link, an all-gather or reduce-scatter (n-1)/n of the whole tensor's bytes.
#ifndef STEPS_07_TENSOR_PARALLEL_LAYER_COMM_H
#define STEPS_07_TENSOR_PARALLEL_LAYER_COMM_H

#include <cuda_runtime.h>
#include <stdint.h>

#include "common/core/layer.h"
#include "steps/07_tensor_parallel/tp_comm.h"

#define LAYER_COMM_MAX_CALLS 16  // collectives per training step

typedef struct {
    TpComm *comm;
    cudaStream_t side;           // backward's overlapped all-reduces (non-blocking stream)
    cudaEvent_t ready, reduced;  // side waits for `ready`; the main stream for `reduced`
    cudaEvent_t start[LAYER_COMM_MAX_CALLS], stop[LAYER_COMM_MAX_CALLS];
    int calls;                   // collectives so far in this step
    double bytes, bus_bytes;     // their payload, and what it puts on each rank's link
} LayerComm;

void layer_comm_init(LayerComm *lc, TpComm *comm);
void layer_comm_free(LayerComm *lc);
int layer_comm_world(const LayerComm *lc);
int layer_comm_rank(const LayerComm *lc);

// Call before each training step; after it (synchronised), the step's collectives:
// milliseconds spent in them (summed durations: overlapped ones included), count, bytes.
void layer_comm_step_begin(LayerComm *lc);
typedef struct {
    double ms, bytes, bus_bytes;
    int calls;
} LayerCommStats;
LayerCommStats layer_comm_step_stats(const LayerComm *lc);

// On the default stream: the layer waits for the result. buf [n] in dtype (or fp32: _f32).
void layer_all_reduce(LayerComm *lc, void *buf, int64_t n, DType dtype);
void layer_all_reduce_f32(LayerComm *lc, float *buf, int64_t n);
// slice [n] of every rank -> full [world * n], in rank order.
void layer_all_gather(LayerComm *lc, const void *slice, void *full, int64_t n, DType dtype);
// full [world * n], partial on every rank -> slice [n] = this rank's part of the sum.
void layer_reduce_scatter(LayerComm *lc, const void *full, void *slice, int64_t n, DType dtype);

// Overlap (Megatron-LM's, for the partial input gradient of a column-parallel Linear):
//   layer_all_reduce_start(buf) or layer_reduce_scatter_start(...)   right after the GEMM
//                                                                    that wrote the input
//   ... work on the default stream that touches neither buffer (the weight-gradient GEMM) ...
//   layer_side_wait()                                                before anything reads
//                                                                    the result
void layer_all_reduce_start(LayerComm *lc, void *buf, int64_t n, DType dtype);
void layer_reduce_scatter_start(LayerComm *lc, const void *full, void *slice, int64_t n, DType dtype);
void layer_side_wait(LayerComm *lc);

// The two ends of the tensor-parallel region, plain TP or sequence parallelism (`sp`):
// Entering, before a column-parallel GEMM, which needs all T tokens [T, h]:
//   SP: all-gather the ranks' [T/tp, h] slices `loc` into `full`, return full;
//   TP: `loc` already is [T, h]: return it (full is not touched).
const void *layer_enter_region(LayerComm *lc, int sp, const void *loc, void *full, int64_t loc_n, DType dtype);
// Leaving, after a row-parallel GEMM whose [T, h] output `partial` is a partial sum:
//   SP: reduce-scatter into the rank's slice `loc` [T/tp, h];
//   TP: all-reduce `partial` in place (loc must then be partial).
// overlap: on the side stream (finish with layer_side_wait).
void layer_leave_region(LayerComm *lc, int sp, void *partial, void *loc, int64_t loc_n, DType dtype, int overlap);

#endif  // STEPS_07_TENSOR_PARALLEL_LAYER_COMM_H
