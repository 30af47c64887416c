// The collectives a tensor-parallel layer calls, in the layer's terms (device tensors of its
// dtype, sizes in elements), each one timed, plus the side stream that lets backward's
// collectives overlap independent GEMMs.
//
//   all-reduce      after a row-parallel GEMM (plain TP): the partial [T, h] outputs summed
//   all-gather      before a column-parallel GEMM (sequence parallelism): every rank's
//                   [T/tp, h] slice -> the whole [T, h]
//   reduce-scatter  after a row-parallel GEMM (sequence parallelism): the partial [T, h]
//                   outputs summed, each rank keeping its [T/tp, h] slice
//
// Overlap (Megatron-LM's async grad all-reduce, Transformer Engine's overlap of the same): a
// collective whose result is not needed at once is STARTED - enqueued on a side stream behind
// an event recorded on the default stream, so that it begins when the tensor it reads has
// been written - and the default stream goes on with work that touches neither of its
// buffers (a weight-gradient GEMM). Before the result is read, the default stream WAITS for
// the event the collective recorded (layer_wait_gathered / layer_wait_reduced): a GPU-side
// wait, the host never blocks. With overlap off (--no-overlap, LayerCommOptions.overlap = 0)
// the same calls run on the default stream in program order and the waits do nothing: one
// flag times both schedules, and both compute the same numbers.
//
// The side stream is created at the device's highest priority (unless side_priority_high =
// 0): when the GEMM and the collective become ready together, the block scheduler hands
// free multiprocessors to NCCL's blocks first, instead of NCCL waiting behind a wave of GEMM
// blocks while its peer spins. With side_ctas > 0 the started collectives use a second
// communicator pinned to that many thread blocks (tp_comm_split_ctas): fewer multiprocessors
// taken from the GEMM, at the price of a slower collective. The default stream's
// collectives always use the main communicator with NCCL's own choice, and then first wait
// for the side stream: two communicators' kernels must never run at once (they can deadlock;
// one communicator's are ordered by NCCL itself, whatever their streams).
//
// --nccl-register (LayerCommOptions.nccl_register): the buffers an all-gather reads and writes
// are registered with NCCL (ncclCommRegister), which then copies straight between the ranks'
// buffers instead of staging through its own (measured on 2 H200s: a [T, h] fp16 all-gather
// 157 -> 123 us). NCCL registers only its own memory usefully, so the caller makes the layer's
// buffers with dev_alloc while NCCL_MEM_ALLOCATOR (nccl_window.h) is installed; here, the first
// time an all-gather meets a buffer, its whole allocation (dev_find_allocation: base and size)
// is registered on the communicator that runs it (the main one, or the started collectives'),
// once. A buffer of cudaMalloc is left alone (counted: layer_comm_registration_words). All-reduce
// and reduce-scatter gain nothing from it (the sweep), so they are left alone too.
// layer_comm_free deregisters: call it before the layer's buffers are freed.
//
// --overlap-sm-margin N (LayerCommOptions.sm_margin): the GEMMs enqueued while a started
// all-reduce or reduce-scatter may run (backward's wgrads) are planned for the device's SMs
// less N (gemm_set_sm_count_target; Transformer Engine's math_sm_count beside its comm-GEMM
// overlap). cuBLASLt's Hopper GEMMs are often persistent, one CTA per SM: while NCCL's blocks
// hold N SMs, N of the GEMM's CTAs cannot start, and the tiles they own finish late. Measured
// (2 x H200, 2026-11-30): the collectives then run as fast beside the GEMM as in line (plain
// tp 2: 2.02 -> 1.29 ms in all, 1.30 in line), but the GEMM on fewer SMs is slower by about what
// that saves: the serial layer 1% faster (median; faster in 10 of 10 turns over four calls
// at N = 16), the parallel and sequence-parallel layers even. Hence the default
// (LAYER_COMM_SM_MARGIN_AUTO): N = 16 - TE's userbuffers also give their communication 16 SMs
// (num_sm = 16) - or an eighth of the SMs on a GPU of fewer than 128 (an A100: 13, an L4: 7;
// those untimed). Step 07 refuses a margin given with --deterministic and leaves the default
// at 0 there (the GEMM module ignores the target in deterministic mode too: gemm.h), where the
// bits of every schedule must agree.
//
// Fault handling stays off this path: every collective only arms the watchdog around its
// enqueue (tp_comm.h); nothing here polls or sleeps.
//
// Timing: CUDA events around each collective, so that a step's time in communication can be
// read after the step has been synchronised (layer_comm_step_stats). They also count the
// time a rank waits for the slowest peer: part of what tensor parallelism costs. For a
// started collective the time includes running beside the GEMM (slower than alone).
// Bus bytes follow nccl-tests: an all-reduce moves 2 (n-1)/n of its bytes over each rank's
// link, an all-gather or reduce-scatter (n-1)/n of the whole tensor's bytes.
#ifndef STEPS_07_TENSOR_PARALLEL_LAYER_COMM_H
#define STEPS_07_TENSOR_PARALLEL_LAYER_COMM_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "common/core/layer.h"
#include "steps/07_tensor_parallel/nccl_window.h"
#include "steps/07_tensor_parallel/tp_comm.h"
#include "steps/07_tensor_parallel/tp_schedule.h"

#define LAYER_COMM_MAX_CALLS 64  // collectives per training step (--fprop-chunks 16: 32 in forward)

typedef struct {
    int overlap;             // 1 (default): started collectives on the side stream; 0: --no-overlap
    int side_priority_high;  // 1 (default): the side stream at the device's highest priority
    int side_ctas;           // > 0: started collectives on a communicator of this many CTAs; 0: NCCL's
    TpCtaPolicy side_cta_policy;  // not UNSET: ... on a communicator of this CTA policy (nccl_window.h)
    int nccl_register;       // 1: the all-gathers' buffers registered with NCCL (above; step 07's default
                             // under sequence parallelism, --no-nccl-register: 0)
    int sm_margin;           // > 0: GEMMs beside a started gradient collective planned for the device's
                             // SMs less this many (--overlap-sm-margin, below); 0: all of them;
                             // LAYER_COMM_SM_MARGIN_AUTO (the default): layer_comm_default_sm_margin
} LayerCommOptions;

#define LAYER_COMM_SM_MARGIN_AUTO (-1)
#define LAYER_COMM_DEFAULTS ((LayerCommOptions){1, 1, 0, TP_CTA_POLICY_UNSET, 0, LAYER_COMM_SM_MARGIN_AUTO})
#define LAYER_COMM_MAX_REGISTERED 32  // buffers --nccl-register may register (the layer has under 10)

typedef struct {
    TpComm *comm;
    LayerCommOptions opt;
    TpComm side_comm;            // the started collectives' communicator when side_ctas > 0 or a policy
    int side_comm_owned;         // side_comm was split here (else the started ones use comm)
    cudaStream_t side;           // started collectives (non-blocking stream)
    cudaEvent_t ready;           // recorded on the default stream: what the side stream waits for
    cudaEvent_t gathered;        // recorded on the side stream after a started all-gather
    cudaEvent_t reduced;         // ... after a started all-reduce / reduce-scatter / group
    cudaEvent_t joined;          // ... by layer_join_side
    cudaEvent_t start[LAYER_COMM_MAX_CALLS], stop[LAYER_COMM_MAX_CALLS];
    int sm_margin_applied;       // the SMs left to the started collectives (opt.sm_margin resolved); 0: none
    int gemm_sms_beside;         // sm_margin_applied > 0: the SMs those GEMMs are planned for; else 0
    int calls;                   // collectives so far in this step
    double bytes, bus_bytes;     // their payload, and what it puts on each rank's link
    // --nccl-register: the all-gathers' buffers, each registered on the communicators that
    // gathered with it; and since init, the all-gathers that found both buffers registered
    // or found one that cannot be (not NCCL's memory).
    NcclBuffer registered[LAYER_COMM_MAX_REGISTERED];
    int num_registered;
    long gathers_registered, gathers_unregistered;
} LayerComm;

// opt: NULL for LAYER_COMM_DEFAULTS. Collective (side_ctas > 0 or a side_cta_policy splits the
// communicator: every rank must call it with the same options). A CTA policy this NCCL lacks
// or refuses is said on rank 0's stdout ("--nccl-cta-policy zero: ... needs NCCL 2.28.0; the
// library loaded is 2.27.7") and the started collectives then use what side_ctas alone gives.
void layer_comm_init(LayerComm *lc, TpComm *comm, const LayerCommOptions *opt);
// The SMs the default (LAYER_COMM_SM_MARGIN_AUTO) leaves to NCCL on a GPU of `sms` SMs:
// 16, or sms / 8 where that is fewer.
int layer_comm_default_sm_margin(int sms);
void layer_comm_free(LayerComm *lc);
int layer_comm_world(const LayerComm *lc);
int layer_comm_rank(const LayerComm *lc);
// "overlapped (side stream at high priority, NCCL's CTAs)", "not overlapped (--no-overlap)" ...
const char *layer_comm_schedule_name(const LayerComm *lc, char *buf, size_t size);

// --nccl-register's state in words (for rank 0's report): "6 buffers (96.0 MiB) registered,
// 6 times on the main communicator and 0 on the side one (--overlap-ctas, --nccl-cta-policy);
// all-gathers on registered buffers since set-up: 60 of 60" (a buffer gathered on both
// communicators is registered on each); "off" without it.
const char *layer_comm_registration_words(const LayerComm *lc, char *buf, size_t size);

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

// Started collectives (see above). Each begins after everything the default stream has
// enqueued so far; until its wait, the default stream must neither read its output nor
// write its input.
//   layer_all_gather_start      -> layer_wait_gathered
//   layer_all_reduce_start      -> layer_wait_reduced
//   layer_reduce_scatter_start  -> layer_wait_reduced
//   layer_all_reduce_group_start (bufs[i][n[i]], one NCCL group) -> layer_join_side
// A wait covers the latest started collective of its kind and everything started before it
// (the side stream runs them in order). layer_join_side waits for all of them: call it before
// the step's end, so that the step's time and the next step's writes include them.
void layer_all_gather_start(LayerComm *lc, const void *slice, void *full, int64_t n, DType dtype);
void layer_all_reduce_start(LayerComm *lc, void *buf, int64_t n, DType dtype);
void layer_reduce_scatter_start(LayerComm *lc, const void *full, void *slice, int64_t n, DType dtype);
void layer_all_reduce_group_start(LayerComm *lc, void *const *bufs, const int64_t *n, int k, DType dtype);
void layer_wait_gathered(LayerComm *lc);
void layer_wait_reduced(LayerComm *lc);
void layer_join_side(LayerComm *lc);

// The schedule (SpGatheredInput, TpSchedule, TP_SCHEDULE_DEFAULTS) is tp_schedule.h's.

// The end of the tensor-parallel region (its entry under sequence parallelism, the
// all-gather, is sp_gather.h's, beside the GEMM that reads it):
// Leaving, after a GEMM whose [T, h] output `partial` is a partial sum over the ranks - in
// forward a row-parallel Linear's output, in backward (the region run in reverse) a
// column-parallel Linear's dgrad:
//   SP: reduce-scatter into the rank's slice `loc` [T/tp, h];
//   TP: all-reduce `partial` in place (loc must then be partial).
// start: 1, a started collective (finish with layer_wait_reduced); 0, finished on return.
void layer_leave_region(LayerComm *lc, int sp, void *partial, void *loc, int64_t loc_n, DType dtype, int start);

#endif  // STEPS_07_TENSOR_PARALLEL_LAYER_COMM_H
