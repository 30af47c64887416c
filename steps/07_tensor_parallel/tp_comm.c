// Ranks, the one-node launcher, and a non-blocking NCCL communicator with deadlines.
#define _POSIX_C_SOURCE 200809L
#include "steps/07_tensor_parallel/tp_comm.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/core/errors.h"
#include "common/gpu/cuda_check.h"
#include "common/gpu/nccl_check.h"

// ---- Who am I -------------------------------------------------------------------------------
static int env_int(const char *name, int *out) {
    const char *v = getenv(name);
    if (!v || !*v) return 0;
    char *end;
    long x = strtol(v, &end, 10);
    if (*end || x < 0 || x > 1 << 20) fail_user("environment variable %s=%s is not a rank number", name, v);
    *out = (int)x;
    return 1;
}

int rank_from_env(RankInfo *info) {
    // The launchers in order of precedence; the third name is the rank within the node.
    static const char *const names[][4] = {
        {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "mpirun (OMPI_COMM_WORLD_*)"},
        {"SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "srun (SLURM_PROCID/SLURM_NTASKS)"},
        {"RANK", "WORLD_SIZE", "LOCAL_RANK", "RANK/WORLD_SIZE"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        int rank, world;
        if (!env_int(names[i][0], &rank)) continue;
        if (!env_int(names[i][1], &world))
            fail_user("%s is set but %s is not", names[i][0], names[i][1]);
        if (world < 1 || rank >= world)
            fail_user("rank %d is out of range for world size %d (%s)", rank, world, names[i][3]);
        info->rank = rank, info->world = world, info->source = names[i][3];
        if (!env_int(names[i][2], &info->local_rank)) info->local_rank = rank;  // one node
        return 1;
    }
    return 0;
}

void keep_nvls_off(void) {
    // NVLink SHARP multicast is not for this machine's GPUs as they are lent: keep it off.
    if (!getenv("NCCL_NVLS_ENABLE")) setenv("NCCL_NVLS_ENABLE", "0", 1);
}

// ---- --tp N: fork N ranks on this node --------------------------------------------------------
int launch_local(int tp, int port, int (*body)(void *ctx), void *ctx) {
    char buf[64];
    pid_t pids[256];
    if (tp > 256) fail_user("--tp %d: at most 256 local ranks", tp);
    fflush(stdout), fflush(stderr);  // or the children print the parent's buffered output again
    for (int r = 0; r < tp; r++) {
        pid_t pid = fork();
        if (pid < 0) DIE("fork: %s", strerror(errno));
        if (pid == 0) {
            snprintf(buf, sizeof buf, "%d", r);
            setenv("RANK", buf, 1), setenv("LOCAL_RANK", buf, 1);
            snprintf(buf, sizeof buf, "%d", tp);
            setenv("WORLD_SIZE", buf, 1);
            snprintf(buf, sizeof buf, "127.0.0.1:%d", port);
            setenv("NCCL_COMM_ID", buf, 1);
            keep_nvls_off();
            exit(body(ctx));
        }
        pids[r] = pid;
    }
    // Wait for all; the first failure stops the rest (they would otherwise wait for it
    // until their own deadline).
    int status_out = 0, alive = tp;
    while (alive > 0) {
        int status;
        pid_t pid = wait(&status);
        if (pid < 0) {
            if (errno == EINTR) continue;
            break;
        }
        alive--;
        int rank = -1;
        for (int r = 0; r < tp; r++)
            if (pids[r] == pid) rank = r, pids[r] = 0;
        int failed = !WIFEXITED(status) || WEXITSTATUS(status) != 0;
        if (failed && status_out == 0) {
            status_out = 1;
            if (WIFSIGNALED(status)) fprintf(stderr, "rank %d was killed by signal %d; stopping the others\n", rank, WTERMSIG(status));
            else fprintf(stderr, "rank %d failed (exit %d); stopping the others\n", rank, WEXITSTATUS(status));
            for (int r = 0; r < tp; r++)
                if (pids[r] > 0) kill(pids[r], SIGTERM);
        }
    }
    return status_out;
}

// ---- The communicator -----------------------------------------------------------------------
static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void sleep_us(long us) {
    struct timespec t = {0, us * 1000};
    nanosleep(&t, NULL);
}

// Gives up: abort the communicator (its peers see the failure instead of waiting forever).
static void give_up(TpComm *c, const char *fmt, const char *what, const char *why) __attribute__((noreturn));
static void give_up(TpComm *c, const char *fmt, const char *what, const char *why) {
    fprintf(stderr, "rank %d: ", c->rank);
    fprintf(stderr, fmt, what, why);
    fprintf(stderr, "\n");
    if (c->comm) ncclCommAbort(c->comm);
    c->comm = NULL;
    exit(1);
}

// Polls the communicator's state until it is no longer "in progress".
static void wait_comm_ready(TpComm *c, const char *what) {
    double deadline = now_s() + c->timeout_s;
    for (;;) {
        ncclResult_t state;
        NCCL_CHECK(ncclCommGetAsyncError(c->comm, &state));
        if (state == ncclSuccess) return;
        if (state != ncclInProgress) give_up(c, "NCCL failed during %s: %s", what, ncclGetErrorString(state));
        if (now_s() > deadline) give_up(c, "timed out during %s (%s): a peer is missing or stuck", what, "see its log");
        sleep_us(200);
    }
}

void tp_comm_init(TpComm *c, const RankInfo *info, double timeout_s) {
    memset(c, 0, sizeof *c);
    c->rank = info->rank, c->world = info->world, c->timeout_s = timeout_s;
    if (!getenv("NCCL_COMM_ID"))
        fail_user("NCCL_COMM_ID is not set: give every rank the same host:port of rank 0 "
                  "(e.g. NCCL_COMM_ID=node0:29500), or use --tp N on one node");
    ncclUniqueId id;
    NCCL_CHECK(ncclGetUniqueId(&id));  // derived from NCCL_COMM_ID: the same on every rank
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclResult_t r = ncclCommInitRankConfig(&c->comm, c->world, id, c->rank, &config);
    if (r != ncclSuccess && r != ncclInProgress)
        give_up(c, "ncclCommInitRankConfig failed (%s): %s", ncclGetErrorString(r), ncclGetLastError(NULL));
    wait_comm_ready(c, "communicator initialisation");
}

void tp_comm_destroy(TpComm *c) {
    if (!c->comm) return;
    ncclResult_t r = ncclCommFinalize(c->comm);  // flushes outstanding work, non-blocking
    if (r != ncclSuccess && r != ncclInProgress) give_up(c, "ncclCommFinalize: %s%s", ncclGetErrorString(r), "");
    wait_comm_ready(c, "finalize");
    NCCL_CHECK(ncclCommDestroy(c->comm));
    c->comm = NULL;
}

void tp_all_reduce(TpComm *c, void *buf, size_t count, ncclDataType_t type, cudaStream_t stream) {
    if (c->world == 1) return;  // nothing to add
    ncclResult_t r = ncclAllReduce(buf, buf, count, type, ncclSum, c->comm, stream);
    if (r != ncclSuccess && r != ncclInProgress) give_up(c, "ncclAllReduce: %s%s", ncclGetErrorString(r), "");
    if (r == ncclInProgress) wait_comm_ready(c, "all-reduce enqueue");
}

void tp_sync(TpComm *c, cudaStream_t stream, const char *what) {
    double deadline = now_s() + c->timeout_s;
    for (;;) {
        cudaError_t e = cudaStreamQuery(stream);
        if (e == cudaSuccess) return;
        if (e != cudaErrorNotReady) give_up(c, "CUDA error while waiting for %s: %s", what, cudaGetErrorString(e));
        if (c->comm && c->world > 1) {
            ncclResult_t state;
            NCCL_CHECK(ncclCommGetAsyncError(c->comm, &state));
            if (state != ncclSuccess && state != ncclInProgress)
                give_up(c, "NCCL failed while waiting for %s: %s", what, ncclGetErrorString(state));
        }
        if (now_s() > deadline) give_up(c, "timed out waiting for %s (%s): a peer is missing or stuck", what, "see its log");
        sleep_us(50);
    }
}
