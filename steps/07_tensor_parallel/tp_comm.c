// Ranks, the one-node launcher, and a blocking NCCL communicator kept from hanging by a
// watchdog thread (see tp_comm.h).
#define _POSIX_C_SOURCE 200809L
#include "steps/07_tensor_parallel/tp_comm.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/core/errors.h"
#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu.h"
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

// ---- How many GPUs, without touching CUDA here -------------------------------------------------
int gpu_count_without_cuda(char *why, size_t why_size) {
    int fd[2];
    if (pipe(fd) != 0) DIE("pipe: %s", strerror(errno));
    fflush(stdout), fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) DIE("fork: %s", strerror(errno));
    if (pid == 0) {  // the child asks CUDA and reports "count reason" through the pipe
        close(fd[0]);
        int n = gpu_count();
        char msg[320];
        int len = snprintf(msg, sizeof msg, "%d %s", n, n ? "" : gpu_unavailable_reason());
        ssize_t wrote = write(fd[1], msg, (size_t)len);
        _exit(wrote == len ? 0 : 1);
    }
    close(fd[1]);
    char msg[320] = {0};
    size_t used = 0;
    ssize_t got;
    while (used < sizeof msg - 1 && (got = read(fd[0], msg + used, sizeof msg - 1 - used)) > 0) used += (size_t)got;
    close(fd[0]);
    int status;
    waitpid(pid, &status, 0);
    int n = 0, skip = 0;
    if (sscanf(msg, "%d %n", &n, &skip) < 1) {
        snprintf(why, why_size, "the GPU probe process failed (status %d)", status);
        return 0;
    }
    snprintf(why, why_size, "%s", msg + skip);
    return n;
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

// ---- The watchdog -------------------------------------------------------------------------------
static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void sleep_us(long us) {
    struct timespec t = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&t, NULL);
}

// What the main thread is blocked in, if anything. The main thread writes, the watchdog
// reads: atomics, no lock (a lock would put the watchdog's latency on the hot path).
static struct {
    _Atomic int64_t deadline_ns;  // 0: nothing armed
    _Atomic(const char *) what;
    _Atomic(ncclComm_t) comm;     // aborted on a timeout, if it exists yet
    _Atomic int rank;
    _Atomic int64_t timeout_ns;
    // The region (tp_watchdog_begin_region) an arm inside it hands back to when disarmed:
    // its deadline (0: no region) and what the watchdog then names and aborts.
    _Atomic int64_t region_deadline_ns;
    _Atomic(const char *) region_what;
    _Atomic(ncclComm_t) region_comm;
    pthread_t thread;
    int started;
} watchdog;

// The watchdog's last resort: the rank ends ABORT_GRACE_S after the abort began, whether or
// not ncclCommAbort returned.
enum { ABORT_GRACE_S = 10 };
static void *exit_after_abort_grace(void *arg) {
    (void)arg;
    sleep_us(ABORT_GRACE_S * 1000000L);
    fprintf(stderr, "rank %d: ncclCommAbort did not return within %d s; ending the rank without it\n",
            atomic_load(&watchdog.rank), ABORT_GRACE_S);
    _exit(1);
}

// Before an ncclCommAbort: the thread that ends the rank if the abort does not return.
static void start_last_resort(void) {
    pthread_t t;
    if (pthread_create(&t, NULL, exit_after_abort_grace, NULL) == 0) pthread_detach(t);
}

static void *watchdog_main(void *arg) {
    (void)arg;
    for (;;) {
        sleep_us(10000);
        int64_t deadline = atomic_load(&watchdog.deadline_ns);
        if (deadline == 0 || now_ns() < deadline) continue;
        fprintf(stderr, "rank %d: timed out after %.0f s in %s: a peer is missing or stuck (see its log); "
                "aborting the communicator\n", atomic_load(&watchdog.rank), 1e-9 * (double)atomic_load(&watchdog.timeout_ns),
                atomic_load(&watchdog.what));
        ncclComm_t comm = atomic_load(&watchdog.comm);
        // The abort releases the NCCL calls blocked on the communicator, so that the peers see
        // a failure rather than wait for ever; if it hangs itself (a kernel stuck on the GPU),
        // a second thread ends the rank anyway.
        start_last_resort();
        if (comm) ncclCommAbort(comm);
        _exit(1);  // not exit(): the main thread is still inside NCCL
    }
    return NULL;
}

void tp_watchdog_arm(TpComm *c, const char *what) {
    if (!watchdog.started) {
        watchdog.started = 1;
        if (pthread_create(&watchdog.thread, NULL, watchdog_main, NULL) != 0) DIE("cannot start the watchdog thread");
        pthread_detach(watchdog.thread);
    }
    const int64_t timeout_ns = (int64_t)(c->timeout_s * 1e9);
    atomic_store(&watchdog.timeout_ns, timeout_ns);
    atomic_store(&watchdog.rank, c->rank);
    atomic_store(&watchdog.comm, c->comm);
    atomic_store(&watchdog.what, what);
    atomic_store(&watchdog.deadline_ns, now_ns() + timeout_ns);  // last: arms the rest
}

// Back to the region's deadline, or none outside a region.
void tp_watchdog_disarm(void) {
    const int64_t region = atomic_load(&watchdog.region_deadline_ns);
    if (region) {
        atomic_store(&watchdog.what, atomic_load(&watchdog.region_what));
        atomic_store(&watchdog.comm, atomic_load(&watchdog.region_comm));
    }
    atomic_store(&watchdog.deadline_ns, region);
}

void tp_watchdog_begin_region(TpComm *c, const char *what) {
    tp_watchdog_arm(c, what);
    atomic_store(&watchdog.region_what, what);
    atomic_store(&watchdog.region_comm, c->comm);
    atomic_store(&watchdog.region_deadline_ns, atomic_load(&watchdog.deadline_ns));
}

void tp_watchdog_end_region(void) {
    atomic_store(&watchdog.region_deadline_ns, 0);
    tp_watchdog_disarm();
}

// ---- The communicator -----------------------------------------------------------------------
// Gives up: abort the communicator (its peers see the failure instead of waiting forever).
static void give_up(TpComm *c, const char *what, const char *why) __attribute__((noreturn));
static void give_up(TpComm *c, const char *what, const char *why) {
    fprintf(stderr, "rank %d: %s: %s\n", c->rank, what, why);
    atomic_store(&watchdog.region_deadline_ns, 0);
    tp_watchdog_disarm();
    atomic_store(&watchdog.rank, c->rank);
    start_last_resort();
    if (c->comm) ncclCommAbort(c->comm);
    c->comm = NULL;
    exit(1);
}

void tp_comm_init(TpComm *c, const RankInfo *info, double timeout_s) {
    memset(c, 0, sizeof *c);
    c->rank = info->rank, c->world = info->world, c->timeout_s = timeout_s;
    if (!getenv("NCCL_COMM_ID"))
        fail_user("NCCL_COMM_ID is not set: give every rank the same host:port of rank 0 "
                  "(e.g. NCCL_COMM_ID=node0:29500), or use --tp N on one node");
    ncclUniqueId id;
    NCCL_CHECK(ncclGetUniqueId(&id));  // derived from NCCL_COMM_ID: the same on every rank
    tp_watchdog_arm(c, "communicator initialisation (ncclCommInitRank)");
    ncclResult_t r = ncclCommInitRank(&c->comm, c->world, id, c->rank);
    tp_watchdog_disarm();
    if (r != ncclSuccess) give_up(c, "ncclCommInitRank failed", ncclGetErrorString(r));
}

void tp_comm_destroy(TpComm *c) {
    if (!c->comm) return;
    tp_watchdog_arm(c, "ncclCommFinalize (flushing outstanding work)");
    ncclResult_t r = ncclCommFinalize(c->comm);
    tp_watchdog_disarm();
    if (r != ncclSuccess) give_up(c, "ncclCommFinalize", ncclGetErrorString(r));
    NCCL_CHECK(ncclCommDestroy(c->comm));
    c->comm = NULL;
}

ncclComm_t tp_comm_split_plain(TpComm *c) {
    ncclComm_t plain = NULL;
    tp_watchdog_arm(c, "ncclCommSplit (the yardstick's communicator)");
    ncclResult_t r = ncclCommSplit(c->comm, 0, c->rank, &plain, NULL);  // NULL: the parent's config
    tp_watchdog_disarm();
    if (r != ncclSuccess) give_up(c, "ncclCommSplit", ncclGetErrorString(r));
    return plain;
}

TpComm tp_comm_split_ctas(TpComm *c, int ctas) {
    TpComm limited = *c;
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 1;
    config.minCTAs = ctas, config.maxCTAs = ctas;
    tp_watchdog_arm(c, "ncclCommSplit (the communicator of the overlapped collectives)");
    ncclResult_t r = ncclCommSplit(c->comm, 0, c->rank, &limited.comm, &config);
    tp_watchdog_disarm();
    if (r != ncclSuccess) give_up(c, "ncclCommSplit with a CTA limit", ncclGetErrorString(r));
    return limited;
}

// The hot path: arm (a clock read, three stores), enqueue, disarm. A first collective may
// block in NCCL's lazy connection set-up until every peer joins: that is what the arm is for.
void tp_all_reduce(TpComm *c, void *buf, size_t count, ncclDataType_t type, cudaStream_t stream) {
    if (c->world == 1) return;  // nothing to add
    tp_watchdog_arm(c, "an all-reduce");
    ncclResult_t r = ncclAllReduce(buf, buf, count, type, ncclSum, c->comm, stream);
    tp_watchdog_disarm();
    if (r != ncclSuccess) give_up(c, "ncclAllReduce", ncclGetErrorString(r));
}

void tp_all_reduce_group(TpComm *c, void *const *bufs, const size_t *counts, int k, ncclDataType_t type,
                         cudaStream_t stream) {
    if (c->world == 1) return;
    tp_watchdog_arm(c, "a group of all-reduces");
    ncclResult_t r = ncclGroupStart();
    for (int i = 0; i < k && r == ncclSuccess; i++) r = ncclAllReduce(bufs[i], bufs[i], counts[i], type, ncclSum, c->comm, stream);
    // Ended even after a failed call: NCCL's group must be closed before anything else.
    ncclResult_t end = ncclGroupEnd();
    tp_watchdog_disarm();
    if (r == ncclSuccess) r = end;
    if (r != ncclSuccess) give_up(c, "a group of ncclAllReduce", ncclGetErrorString(r));
}

static size_t type_bytes(ncclDataType_t t) { return t == ncclFloat32 ? 4 : t == ncclHalf || t == ncclBfloat16 ? 2 : 0; }

void tp_all_gather(TpComm *c, const void *send, void *recv, size_t count, ncclDataType_t type,
                   cudaStream_t stream) {
    if (c->world == 1) {  // the gathered tensor is this rank's slice
        if (send != recv) CUDA_CHECK(cudaMemcpyAsync(recv, send, count * type_bytes(type), cudaMemcpyDeviceToDevice, stream));
        return;
    }
    tp_watchdog_arm(c, "an all-gather");
    ncclResult_t r = ncclAllGather(send, recv, count, type, c->comm, stream);
    tp_watchdog_disarm();
    if (r != ncclSuccess) give_up(c, "ncclAllGather", ncclGetErrorString(r));
}

void tp_reduce_scatter(TpComm *c, const void *send, void *recv, size_t count, ncclDataType_t type,
                       cudaStream_t stream) {
    if (c->world == 1) {  // the sum of one rank, all of it this rank's slice
        if (send != recv) CUDA_CHECK(cudaMemcpyAsync(recv, send, count * type_bytes(type), cudaMemcpyDeviceToDevice, stream));
        return;
    }
    tp_watchdog_arm(c, "a reduce-scatter");
    ncclResult_t r = ncclReduceScatter(send, recv, count, type, ncclSum, c->comm, stream);
    tp_watchdog_disarm();
    if (r != ncclSuccess) give_up(c, "ncclReduceScatter", ncclGetErrorString(r));
}

// Not the hot path (once per step, after the step's events are recorded): polling with short
// sleeps costs nothing that is timed.
void tp_sync(TpComm *c, cudaStream_t stream, const char *what) {
    const int64_t deadline = now_ns() + (int64_t)(c->timeout_s * 1e9);
    char msg[160];
    for (;;) {
        cudaError_t e = cudaStreamQuery(stream);
        if (e == cudaSuccess) return;
        snprintf(msg, sizeof msg, "waiting for %s", what);
        if (e != cudaErrorNotReady) give_up(c, msg, cudaGetErrorString(e));
        if (c->comm && c->world > 1) {
            ncclResult_t state;
            NCCL_CHECK(ncclCommGetAsyncError(c->comm, &state));
            if (state != ncclSuccess && state != ncclInProgress) give_up(c, msg, ncclGetErrorString(state));
        }
        if (now_ns() > deadline) give_up(c, msg, "timed out: a peer is missing or stuck (see its log)");
        sleep_us(50);
    }
}
