// The multi-process plumbing of step 07: who am I (rank, world), how the processes are
// started, and an NCCL communicator that cannot hang the job.
//
//   one process per GPU. The rank and world size come from whoever started us:
//     mpirun   OMPI_COMM_WORLD_RANK / OMPI_COMM_WORLD_SIZE / OMPI_COMM_WORLD_LOCAL_RANK
//     srun     SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID
//     torchrun-style (and our own --tp N launcher)  RANK / WORLD_SIZE / LOCAL_RANK
//
//   bootstrap: NCCL's own. NCCL_COMM_ID=host:port names where rank 0 listens; with it set,
//     ncclGetUniqueId derives the id from that address, so every rank can call it itself and
//     nothing (no MPI, no file) has to carry the id from rank 0 to the others.
//
//   no hangs, at NCCL's speed: the communicator is a plain BLOCKING one (as PyTorch uses
//     NCCL), so a collective costs what ncclAllReduce costs. The deadlines live off the hot
//     path, in a watchdog thread (PyTorch's ProcessGroupNCCL does the same): before each
//     host-side NCCL call that may block - creating the communicator, the lazy connection
//     set-up inside a first collective, finalize - the rank writes a deadline into an atomic
//     (a clock read and a store, ~20 ns); the watchdog looks every 10 ms, and a call still
//     blocked at its deadline ends the rank: message, ncclCommAbort, exit 1. Waiting for the
//     GPU (tp_sync) polls cudaStreamQuery and ncclCommGetAsyncError against the same deadline.
//
//   Before (a non-blocking communicator polled with 200 us sleeps after every enqueue) each
//   all-reduce cost ~290 us up to 16 MiB, against ~45 us for NCCL itself (docs/results.md).
#ifndef STEPS_07_TENSOR_PARALLEL_TP_COMM_H
#define STEPS_07_TENSOR_PARALLEL_TP_COMM_H

#include <cuda_runtime.h>
#include <nccl.h>
#include <stddef.h>

typedef struct {
    int rank, world, local_rank;
    const char *source;  // which environment variables said so ("RANK/WORLD_SIZE", ...)
} RankInfo;

// Reads the rank from the environment. Returns 0 if no launcher set one (then the caller
// runs as a single process, or forks with --tp N).
int rank_from_env(RankInfo *info);

// The number of GPUs this process could use (CUDA_VISIBLE_DEVICES applies), asked in a
// short-lived child process so that this one stays free of CUDA: the ranks are forked after
// it, and a CUDA context does not survive fork. 0 with `why` filled when there are none.
int gpu_count_without_cuda(char *why, size_t why_size);

// --tp N on one node: forks N children, each with RANK, WORLD_SIZE, LOCAL_RANK,
// NCCL_COMM_ID=127.0.0.1:<port> and NCCL_NVLS_ENABLE=0 set, each running `body`. The parent
// touches no CUDA. If a child fails, the parent stops the others. Returns the exit status
// for the parent's main.
int launch_local(int tp, int port, int (*body)(void *ctx), void *ctx);

// Sets NCCL_NVLS_ENABLE=0 unless the user set it: NVLink multicast (NVLS) stays off.
void keep_nvls_off(void);

typedef struct {
    ncclComm_t comm;
    int rank, world;
    double timeout_s;  // deadline of every wait, in seconds
} TpComm;

// Creates the (blocking) communicator under the watchdog; a peer that never arrives ends
// this rank after timeout_s with a message naming what it waited for.
void tp_comm_init(TpComm *c, const RankInfo *info, double timeout_s);
void tp_comm_destroy(TpComm *c);

// The collectives, enqueued on `stream` (they do not wait for the GPU). Sizes in elements.
// Each arms the watchdog around its enqueue; nothing else is added to NCCL's own cost.
//   all-reduce      buf[count] = sum over ranks, in place
//   all-gather      recv[world * count] = the ranks' send[count], in rank order
//   reduce-scatter  recv[count] = slice `rank` of the sum over ranks of send[world * count]
void tp_all_reduce(TpComm *c, void *buf, size_t count, ncclDataType_t type, cudaStream_t stream);
void tp_all_gather(TpComm *c, const void *send, void *recv, size_t count, ncclDataType_t type,
                   cudaStream_t stream);
void tp_reduce_scatter(TpComm *c, const void *send, void *recv, size_t count, ncclDataType_t type,
                       cudaStream_t stream);
// k all-reduces in place, bufs[i][counts[i]], as ONE NCCL group (ncclGroupStart/End): one
// launch and one latency for several small tensors (sequence parallelism's LayerNorm and bias
// gradients, [h] each).
void tp_all_reduce_group(TpComm *c, void *const *bufs, const size_t *counts, int k, ncclDataType_t type,
                         cudaStream_t stream);

// Waits for `stream` to drain while watching the communicator; aborts on error or timeout.
void tp_sync(TpComm *c, cudaStream_t stream, const char *what);

// A second communicator over the same ranks (ncclCommSplit), blocking, used bare, for the
// yardstick of the all-reduce sweep: what ncclAllReduce costs without anything of ours.
// Destroy with ncclCommDestroy.
ncclComm_t tp_comm_split_plain(TpComm *c);

// A second communicator over the same ranks whose collectives run on exactly `ctas` thread
// blocks (ncclConfig_t minCTAs = maxCTAs = ctas; NCCL picks up to 32 or so by itself). For
// collectives that run beside GEMMs: every block NCCL holds is a multiprocessor the GEMM
// cannot use (Megatron-LM sets the same per process group: max_ctas, min_ctas). Blocking,
// watched like c. Returns a TpComm to pass to the collectives above; tp_comm_destroy it.
TpComm tp_comm_split_ctas(TpComm *c, int ctas);

// Brackets a host-side NCCL call that may block (arm before, disarm after): if it has not
// returned c->timeout_s after the arm, the watchdog ends the rank with a message naming
// `what` (a static string). One watchdog per process: a rank is one process.
void tp_watchdog_arm(TpComm *c, const char *what);
void tp_watchdog_disarm(void);

// A region under the watchdog: the host's work from begin to end - every kernel launch in it
// too - must be done within c->timeout_s. Why: when a kernel waits on the GPU for a peer that
// never comes, the host goes on enqueueing until CUDA's launch queue is full, and the next plain
// kernel launch (no NCCL call, so nothing armed) then blocks for ever. A training step's
// enqueue is one region (its wait, tp_sync, has its own deadline). The arms inside a region
// (each NCCL call's) take over its deadline and, disarmed, hand it back. One region at a time.
void tp_watchdog_begin_region(TpComm *c, const char *what);
void tp_watchdog_end_region(void);

#endif  // STEPS_07_TENSOR_PARALLEL_TP_COMM_H
