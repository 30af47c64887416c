// The collectives alone, at the sizes from 64 KiB to 256 MiB and the layer's own [T, h], and
// what each of NCCL's buffer and CTA features buys, in one run. Rank 0 prints; every rank
// takes part. Three tables and a fourth:
//
//   all-reduce      ours (tp_all_reduce) against the yardstick, ncclAllReduce called bare on a
//                   second, plain blocking communicator (tp_comm_split_plain), the way PyTorch
//                   calls it; then the same bare call in the columns below
//   all-gather,     bytes = the whole [T, h]-sized tensor (all-gather's output, reduce-scatter's
//   reduce-scatter  input); each rank's slice is 1/world of it
//   beside a GEMM   at the layer's [T, h] only: how much each collective and column slows FC1's
//                   forward GEMM of one rank running at the same time, and how much of the
//                   collective's time the GEMM hides
//
// The columns (nccl_window.h says what each feature is):
//   plain              cudaMalloc'd buffers, the yardstick's communicator
//   registered         ncclMemAlloc'd buffers, ncclCommRegister'd on that communicator
//   window             ncclMemAlloc'd buffers registered on it as symmetric windows
//   win+effic.         the same window buffers, registered on a communicator split with
//                      CTAPolicy EFFICIENCY (as few CTAs as give decent speed)
//   win+zero           ... with CTAPolicy ZERO (no CTA where NCCL can: copy engines)
// A column whose feature this NCCL lacks, or refuses, prints n/a, and a line under its table
// says why (e.g. "a symmetric window (ncclCommWindowRegister) needs NCCL 2.27.0; the library
// loaded is 2.26.2"): the run goes on with the others. Before any timing, every column's every
// collective is run once with known inputs at 2^16 elements and at the layer's [T, h] (at most
// 2^25) and its output compared with the exact sum; a wrong one is timed anyway and marked '!'.
//
// Timing: 20 calls back to back on one stream between two CUDA events, after 3 untimed ones
// (armed with the watchdog: a first call at a size may set up connections), size by size, the
// columns in turns. Bus bandwidth as nccl-tests' "busbw": all-reduce 2 (n - 1) / n * bytes /
// time, all-gather and reduce-scatter (n - 1) / n * bytes / time.
//
// Beside a GEMM (its columns): calls and GEMMs = how many of each run together (the collectives
// about 3 ms alone, and as many GEMMs as last as long alone); coll alone / GEMM alone = us per
// call measured just before; coll beside / GEMM beside = us per call while both run (the
// collectives on a non-blocking side stream of the highest priority, started first, as the
// layer's overlapped collectives are); GEMM slow = GEMM beside / GEMM alone - 1; both done = us
// until both streams are done; serial = calls * coll alone + GEMMs * GEMM alone; hidden =
// (serial - both done) / (calls * coll alone): the share of the collectives' time the overlap
// hid (100% = free, 0% = no better than one after the other). Mean of 3 rounds after 1 untimed.
#ifndef STEPS_07_TENSOR_PARALLEL_TP_SWEEP_H
#define STEPS_07_TENSOR_PARALLEL_TP_SWEEP_H

#include "common/core/layer.h"
#include "steps/07_tensor_parallel/tp_comm.h"

// c: the layer (its [T, h] is marked in the tables; its dtype and FC1 shape are used).
// Does nothing when comm->world is 1. Collective: every rank calls it.
void collective_sweep(TpComm *comm, const LayerConfig *c);

#endif  // STEPS_07_TENSOR_PARALLEL_TP_SWEEP_H
