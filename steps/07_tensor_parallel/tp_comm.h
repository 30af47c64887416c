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
//   no hangs: the communicator is non-blocking (ncclConfig_t.blocking = 0). Every wait -
//     for the communicator to be ready, for a collective to finish - polls
//     ncclCommGetAsyncError and the stream with a deadline; on error or timeout the rank
//     calls ncclCommAbort (which releases the peers blocked on it) and exits with a message.
#ifndef STEPS_07_TENSOR_PARALLEL_TP_COMM_H
#define STEPS_07_TENSOR_PARALLEL_TP_COMM_H

#include <cuda_runtime.h>
#include <nccl.h>

typedef struct {
    int rank, world, local_rank;
    const char *source;  // which environment variables said so ("RANK/WORLD_SIZE", ...)
} RankInfo;

// Reads the rank from the environment. Returns 0 if no launcher set one (then the caller
// runs as a single process, or forks with --tp N).
int rank_from_env(RankInfo *info);

// --tp N on one node: forks N children, each with RANK, WORLD_SIZE, LOCAL_RANK,
// NCCL_COMM_ID=127.0.0.1:<port> and NCCL_NVLS_ENABLE=0 set, each running `body`. The parent
// touches no CUDA (a CUDA context does not survive fork). If a child fails, the parent stops
// the others. Returns the exit status for the parent's main.
int launch_local(int tp, int port, int (*body)(void *ctx), void *ctx);

// Sets NCCL_NVLS_ENABLE=0 unless the user set it: NVLink multicast (NVLS) stays off.
void keep_nvls_off(void);

typedef struct {
    ncclComm_t comm;
    int rank, world;
    double timeout_s;  // deadline of every wait
} TpComm;

// Creates the communicator (non-blocking) and waits, with the deadline, until it is ready.
void tp_comm_init(TpComm *c, const RankInfo *info, double timeout_s);
void tp_comm_destroy(TpComm *c);
// Sum all-reduce in place on `stream` (enqueued; does not wait for the GPU).
void tp_all_reduce(TpComm *c, void *buf, size_t count, ncclDataType_t type, cudaStream_t stream);
// Waits for `stream` to drain while watching the communicator; aborts on error or timeout.
void tp_sync(TpComm *c, cudaStream_t stream, const char *what);

#endif  // STEPS_07_TENSOR_PARALLEL_TP_COMM_H
