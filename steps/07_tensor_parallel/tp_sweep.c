// The all-reduce sweep against NCCL's own: see tp_sweep.h.
#include "steps/07_tensor_parallel/tp_sweep.h"

#include <stdio.h>

#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu.h"
#include "common/gpu/nccl_check.h"

enum { SWEEP_WARMUP = 3, SWEEP_ITERS = 20 };

typedef struct {
    TpComm *ours;      // tp_all_reduce: our communicator, watchdog armed around each call
    ncclComm_t plain;  // the yardstick: bare ncclAllReduce
    cudaEvent_t start, stop;
} Sweep;

// Microseconds per call of `iters` back-to-back all-reduces of `elems` elements.
static double time_calls(Sweep *s, int yardstick, void *buf, int64_t elems, ncclDataType_t type) {
    for (int i = 0; i < SWEEP_WARMUP + SWEEP_ITERS; i++) {
        if (i == SWEEP_WARMUP) CUDA_CHECK(cudaEventRecord(s->start, 0));
        if (yardstick) NCCL_CHECK(ncclAllReduce(buf, buf, (size_t)elems, type, ncclSum, s->plain, 0));
        else tp_all_reduce(s->ours, buf, (size_t)elems, type, 0);
    }
    CUDA_CHECK(cudaEventRecord(s->stop, 0));
    tp_sync(s->ours, 0, "the all-reduce sweep");
    float ms;
    CUDA_CHECK(cudaEventElapsedTime(&ms, s->start, s->stop));
    return 1e3 * ms / SWEEP_ITERS;
}

void all_reduce_sweep(TpComm *comm, DType dtype, int64_t layer_elems) {
    if (comm->world == 1) return;
    const ncclDataType_t type = dtype == DTYPE_BF16 ? ncclBfloat16 : ncclHalf;
    const int64_t max_elems = (int64_t)1 << 27;  // 256 MiB of 16-bit values
    Sweep s = {comm, tp_comm_split_plain(comm), NULL, NULL};
    void *buf = dev_alloc((size_t)max_elems * 2);
    CUDA_CHECK(cudaMemset(buf, 0, (size_t)max_elems * 2));
    CUDA_CHECK(cudaEventCreate(&s.start));
    CUDA_CHECK(cudaEventCreate(&s.stop));
    // The yardstick's first calls set up its connections: under the watchdog, like ours.
    tp_watchdog_arm(comm, "the yardstick's first all-reduce");
    NCCL_CHECK(ncclAllReduce(buf, buf, 1024, type, ncclSum, s.plain, 0));
    tp_watchdog_disarm();
    tp_sync(comm, 0, "the yardstick's first all-reduce");
    if (comm->rank == 0) {
        printf("\nall-reduce (sum, %s) across %d GPUs, %d calls back to back per size: tp_all_reduce (blocking "
               "communicator, watchdog) against bare ncclAllReduce on a second blocking communicator\n",
               dtype_name(dtype), comm->world, SWEEP_ITERS);
        printf("| %12s | %11s | %11s | %6s | %12s | %12s |\n", "bytes", "ours (us)", "NCCL (us)", "ratio",
               "ours bus GB/s", "NCCL bus GB/s");
        printf("|---:|---:|---:|---:|---:|---:|\n");
    }
    const int64_t sizes[] = {(int64_t)1 << 15, (int64_t)1 << 19, (int64_t)1 << 21, (int64_t)1 << 23,
                             (int64_t)1 << 25, (int64_t)1 << 27, layer_elems < max_elems ? layer_elems : max_elems};
    const int count = (int)(sizeof sizes / sizeof sizes[0]);
    for (int k = 0; k < count; k++) {
        const double bytes = (double)sizes[k] * 2, bus = 2.0 * (comm->world - 1) / comm->world * bytes;
        // In turns, so that both see the machine in the same state.
        double ours = time_calls(&s, 0, buf, sizes[k], type);
        double nccl = time_calls(&s, 1, buf, sizes[k], type);
        if (comm->rank == 0)
            printf("| %12.0f | %11.1f | %11.1f | %6.2f | %12.1f | %12.1f |%s\n", bytes, ours, nccl, ours / nccl,
                   bus / ours / 1e3, bus / nccl / 1e3, k == count - 1 ? "  <- the layer's [T, h]" : "");
    }
    fflush(stdout);
    cudaEventDestroy(s.start), cudaEventDestroy(s.stop);
    dev_free(buf);
    tp_watchdog_arm(comm, "destroying the yardstick's communicator");
    NCCL_CHECK(ncclCommDestroy(s.plain));
    tp_watchdog_disarm();
}
