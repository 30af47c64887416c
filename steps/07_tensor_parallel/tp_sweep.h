// The all-reduce alone, at the sizes from 64 KiB to 256 MiB and the layer's own [T, h], with a
// yardstick in the same run: ncclAllReduce called bare on a second, plain blocking
// communicator (tp_comm_split_plain), the way PyTorch calls it. Both are timed the same way
// (20 calls back to back on one stream between two CUDA events, after 3 untimed ones), size
// by size in turns, and printed side by side with their bus bandwidth
// 2 (n - 1) / n * bytes / time (what a ring all-reduce moves over each GPU's link, nccl-tests'
// "busbw"). Rank 0 prints; every rank takes part.
#ifndef STEPS_07_TENSOR_PARALLEL_TP_SWEEP_H
#define STEPS_07_TENSOR_PARALLEL_TP_SWEEP_H

#include <stdint.h>

#include "common/core/layer.h"
#include "steps/07_tensor_parallel/tp_comm.h"

// layer_elems: the layer's [T, h] (marked in the table). Does nothing when comm->world is 1.
void all_reduce_sweep(TpComm *comm, DType dtype, int64_t layer_elems);

#endif  // STEPS_07_TENSOR_PARALLEL_TP_SWEEP_H
