// Timed collectives for the tensor-parallel layer (see layer_comm.h).
#include "steps/07_tensor_parallel/layer_comm.h"

#include <string.h>

#include "common/core/errors.h"
#include "common/gpu/cuda_check.h"

static ncclDataType_t nccl_type(DType d) { return d == DTYPE_BF16 ? ncclBfloat16 : ncclHalf; }

void layer_comm_init(LayerComm *lc, TpComm *comm) {
    memset(lc, 0, sizeof *lc);
    lc->comm = comm;
    for (int i = 0; i < LAYER_COMM_MAX_CALLS; i++) {
        CUDA_CHECK(cudaEventCreate(&lc->start[i]));
        CUDA_CHECK(cudaEventCreate(&lc->stop[i]));
    }
    // Non-blocking: no implicit synchronisation with the default stream, where the layer runs.
    CUDA_CHECK(cudaStreamCreateWithFlags(&lc->side, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreateWithFlags(&lc->ready, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&lc->reduced, cudaEventDisableTiming));
}

void layer_comm_free(LayerComm *lc) {
    for (int i = 0; i < LAYER_COMM_MAX_CALLS; i++) cudaEventDestroy(lc->start[i]), cudaEventDestroy(lc->stop[i]);
    cudaStreamDestroy(lc->side);
    cudaEventDestroy(lc->ready), cudaEventDestroy(lc->reduced);
}

int layer_comm_world(const LayerComm *lc) { return lc->comm->world; }
int layer_comm_rank(const LayerComm *lc) { return lc->comm->rank; }

void layer_comm_step_begin(LayerComm *lc) { lc->calls = 0, lc->bytes = lc->bus_bytes = 0.0; }

LayerCommStats layer_comm_step_stats(const LayerComm *lc) {
    LayerCommStats s = {0.0, lc->bytes, lc->bus_bytes, lc->calls};
    for (int i = 0; i < lc->calls; i++) {
        float ms;
        CUDA_CHECK(cudaEventElapsedTime(&ms, lc->start[i], lc->stop[i]));
        s.ms += ms;
    }
    return s;
}

// Opens the timing bracket of one collective on `stream`; returns its index.
static int begin_call(LayerComm *lc, cudaStream_t stream, double bytes, double bus_factor) {
    if (lc->calls == LAYER_COMM_MAX_CALLS) DIE("more than %d collectives in a step", LAYER_COMM_MAX_CALLS);
    int i = lc->calls++;
    lc->bytes += bytes, lc->bus_bytes += bytes * bus_factor;
    CUDA_CHECK(cudaEventRecord(lc->start[i], stream));
    return i;
}

static void end_call(LayerComm *lc, int i, cudaStream_t stream) { CUDA_CHECK(cudaEventRecord(lc->stop[i], stream)); }

static void all_reduce_on(LayerComm *lc, void *buf, int64_t n, ncclDataType_t type, size_t elem, cudaStream_t stream) {
    const int w = lc->comm->world;
    if (w == 1) return;
    int i = begin_call(lc, stream, (double)n * elem, 2.0 * (w - 1) / w);
    tp_all_reduce(lc->comm, buf, (size_t)n, type, stream);
    end_call(lc, i, stream);
}

void layer_all_reduce(LayerComm *lc, void *buf, int64_t n, DType dtype) {
    all_reduce_on(lc, buf, n, nccl_type(dtype), 2, 0);
}

void layer_all_reduce_f32(LayerComm *lc, float *buf, int64_t n) { all_reduce_on(lc, buf, n, ncclFloat32, 4, 0); }

static void all_gather_on(LayerComm *lc, const void *slice, void *full, int64_t n, DType dtype, cudaStream_t stream) {
    const int w = lc->comm->world;
    if (w == 1) {  // the gathered tensor is the slice
        tp_all_gather(lc->comm, slice, full, (size_t)n, nccl_type(dtype), stream);
        return;
    }
    int i = begin_call(lc, stream, (double)n * w * 2, (double)(w - 1) / w);
    tp_all_gather(lc->comm, slice, full, (size_t)n, nccl_type(dtype), stream);
    end_call(lc, i, stream);
}

static void reduce_scatter_on(LayerComm *lc, const void *full, void *slice, int64_t n, DType dtype,
                              cudaStream_t stream) {
    const int w = lc->comm->world;
    if (w == 1) {
        tp_reduce_scatter(lc->comm, full, slice, (size_t)n, nccl_type(dtype), stream);
        return;
    }
    int i = begin_call(lc, stream, (double)n * w * 2, (double)(w - 1) / w);
    tp_reduce_scatter(lc->comm, full, slice, (size_t)n, nccl_type(dtype), stream);
    end_call(lc, i, stream);
}

void layer_all_gather(LayerComm *lc, const void *slice, void *full, int64_t n, DType dtype) {
    all_gather_on(lc, slice, full, n, dtype, 0);
}

void layer_reduce_scatter(LayerComm *lc, const void *full, void *slice, int64_t n, DType dtype) {
    reduce_scatter_on(lc, full, slice, n, dtype, 0);
}

// The side stream starts once the default stream has written the input.
static void side_begin(LayerComm *lc) {
    CUDA_CHECK(cudaEventRecord(lc->ready, 0));
    CUDA_CHECK(cudaStreamWaitEvent(lc->side, lc->ready, 0));
}

static void side_end(LayerComm *lc) { CUDA_CHECK(cudaEventRecord(lc->reduced, lc->side)); }

void layer_all_reduce_start(LayerComm *lc, void *buf, int64_t n, DType dtype) {
    if (lc->comm->world == 1) return;
    side_begin(lc);
    all_reduce_on(lc, buf, n, nccl_type(dtype), 2, lc->side);
    side_end(lc);
}

void layer_reduce_scatter_start(LayerComm *lc, const void *full, void *slice, int64_t n, DType dtype) {
    side_begin(lc);
    reduce_scatter_on(lc, full, slice, n, dtype, lc->side);
    side_end(lc);
}

void layer_side_wait(LayerComm *lc) { CUDA_CHECK(cudaStreamWaitEvent(0, lc->reduced, 0)); }

const void *layer_enter_region(LayerComm *lc, int sp, const void *loc, void *full, int64_t loc_n, DType dtype) {
    if (!sp) return loc;
    layer_all_gather(lc, loc, full, loc_n, dtype);
    return full;
}

void layer_leave_region(LayerComm *lc, int sp, void *partial, void *loc, int64_t loc_n, DType dtype, int overlap) {
    if (sp) {
        if (overlap) layer_reduce_scatter_start(lc, partial, loc, loc_n, dtype);
        else layer_reduce_scatter(lc, partial, loc, loc_n, dtype);
        return;
    }
    if (loc != partial) DIE("plain TP leaves the region in place: the slice is the whole tensor");
    if (overlap) layer_all_reduce_start(lc, partial, loc_n, dtype);
    else layer_all_reduce(lc, partial, loc_n, dtype);
}
