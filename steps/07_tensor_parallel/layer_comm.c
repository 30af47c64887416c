// Timed collectives for the tensor-parallel layer (see layer_comm.h).
#include "steps/07_tensor_parallel/layer_comm.h"

#include <stdio.h>
#include <string.h>

#include "common/core/errors.h"
#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu.h"
#include "modules/gemm.h"

static ncclDataType_t nccl_type(DType d) { return d == DTYPE_BF16 ? ncclBfloat16 : ncclHalf; }

int layer_comm_default_sm_margin(int sms) { return sms / 8 < 16 ? sms / 8 : 16; }

void layer_comm_init(LayerComm *lc, TpComm *comm, const LayerCommOptions *opt) {
    memset(lc, 0, sizeof *lc);
    lc->comm = comm;
    lc->opt = opt ? *opt : LAYER_COMM_DEFAULTS;
    if (lc->opt.overlap && lc->opt.sm_margin != 0 && comm->world > 1) {
        int device = 0, sms = 0;  // the rank's own GPU: current since its set-up
        CUDA_CHECK(cudaGetDevice(&device));
        CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
        const int margin =
            lc->opt.sm_margin == LAYER_COMM_SM_MARGIN_AUTO ? layer_comm_default_sm_margin(sms) : lc->opt.sm_margin;
        if (margin >= sms)
            fail_user("--overlap-sm-margin %d leaves the GEMMs no multiprocessor: this GPU has %d", margin, sms);
        if (margin > 0) lc->sm_margin_applied = margin, lc->gemm_sms_beside = sms - margin;
    }
    for (int i = 0; i < LAYER_COMM_MAX_CALLS; i++) {
        CUDA_CHECK(cudaEventCreate(&lc->start[i]));
        CUDA_CHECK(cudaEventCreate(&lc->stop[i]));
    }
    // Non-blocking: no implicit synchronisation with the default stream, where the layer runs.
    // In CUDA's numbering a LOWER number is a higher priority; the default stream has the
    // least (0).
    int least, greatest;
    CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    CUDA_CHECK(cudaStreamCreateWithPriority(&lc->side, cudaStreamNonBlocking,
                                            lc->opt.side_priority_high ? greatest : least));
    cudaEvent_t *events[] = {&lc->ready, &lc->gathered, &lc->reduced, &lc->joined};
    for (size_t i = 0; i < sizeof events / sizeof events[0]; i++)
        CUDA_CHECK(cudaEventCreateWithFlags(events[i], cudaEventDisableTiming));
    if (!lc->opt.overlap || comm->world == 1) return;
    if (lc->opt.side_cta_policy != TP_CTA_POLICY_UNSET) {
        char why[320] = "";
        int ok = !tp_comm_split_config(comm, lc->opt.side_cta_policy, lc->opt.side_ctas, &lc->side_comm, why, sizeof why);
        if (tp_all_ranks_ok(comm, ok)) {
            lc->side_comm_owned = 1;
            return;
        }
        if (lc->side_comm.comm) tp_comm_destroy(&lc->side_comm);
        if (comm->rank == 0)
            printf("--nccl-cta-policy %s: %s; the overlapped collectives go on without it\n",
                   tp_cta_policy_name(lc->opt.side_cta_policy), why[0] ? why : "refused on another rank");
        lc->opt.side_cta_policy = TP_CTA_POLICY_UNSET;  // what the schedule's name then says
    }
    if (lc->opt.side_ctas > 0) {
        lc->side_comm = tp_comm_split_ctas(comm, lc->opt.side_ctas);
        lc->side_comm_owned = 1;
    }
}

void layer_comm_free(LayerComm *lc) {
    // Deregistered while their communicators live, and before their owners free them.
    for (int i = 0; i < lc->num_registered; i++) nccl_buffer_deregister(&lc->registered[i]);
    lc->num_registered = 0;
    for (int i = 0; i < LAYER_COMM_MAX_CALLS; i++) cudaEventDestroy(lc->start[i]), cudaEventDestroy(lc->stop[i]);
    cudaStreamDestroy(lc->side);
    cudaEventDestroy(lc->ready), cudaEventDestroy(lc->gathered), cudaEventDestroy(lc->reduced);
    cudaEventDestroy(lc->joined);
    if (lc->side_comm_owned) tp_comm_destroy(&lc->side_comm);
}

int layer_comm_world(const LayerComm *lc) { return lc->comm->world; }
int layer_comm_rank(const LayerComm *lc) { return lc->comm->rank; }

const char *layer_comm_schedule_name(const LayerComm *lc, char *buf, size_t size) {
    if (!lc->opt.overlap) {
        snprintf(buf, size, "not overlapped (--no-overlap: every collective in line)");
        return buf;
    }
    char ctas[96] = "NCCL's own CTA count";
    if (lc->opt.side_ctas > 0 && lc->opt.side_cta_policy != TP_CTA_POLICY_UNSET)
        snprintf(ctas, sizeof ctas, "a communicator of %d CTAs, CTA policy %s", lc->opt.side_ctas,
                 tp_cta_policy_name(lc->opt.side_cta_policy));
    else if (lc->opt.side_ctas > 0) snprintf(ctas, sizeof ctas, "a communicator of %d CTAs", lc->opt.side_ctas);
    else if (lc->opt.side_cta_policy != TP_CTA_POLICY_UNSET)
        snprintf(ctas, sizeof ctas, "a communicator of CTA policy %s", tp_cta_policy_name(lc->opt.side_cta_policy));
    char margin[80] = "";
    if (lc->gemm_sms_beside)
        snprintf(margin, sizeof margin, "; GEMMs beside a gradient collective planned for %d SMs", lc->gemm_sms_beside);
    snprintf(buf, size, "overlapped (side stream at %s priority, %s%s)", lc->opt.side_priority_high ? "high" : "normal",
             ctas, margin);
    return buf;
}

const char *layer_comm_registration_words(const LayerComm *lc, char *buf, size_t size) {
    if (!lc->opt.nccl_register) {
        snprintf(buf, size, "off");
        return buf;
    }
    int on_main = 0, on_side = 0;
    double bytes = 0.0;
    for (int i = 0; i < lc->num_registered; i++) {
        const NcclBuffer *b = &lc->registered[i];
        bytes += (double)b->bytes;
        for (int j = 0; j < b->regs; j++) {
            if (b->reg[j].owner == lc->comm) on_main++;
            else on_side++;
        }
    }
    snprintf(buf, size,
             "%d buffers (%.1f MiB) registered, %d times on the main communicator and %d on the side one "
             "(--overlap-ctas, --nccl-cta-policy); all-gathers on registered buffers since set-up: %ld of %ld",
             lc->num_registered, bytes / 1048576.0, on_main, on_side, lc->gathers_registered,
             lc->gathers_registered + lc->gathers_unregistered);
    return buf;
}

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

static void all_reduce_on(LayerComm *lc, TpComm *comm, void *buf, int64_t n, ncclDataType_t type, size_t elem,
                          cudaStream_t stream) {
    const int w = comm->world;
    if (w == 1) return;
    int i = begin_call(lc, stream, (double)n * elem, 2.0 * (w - 1) / w);
    tp_all_reduce(comm, buf, (size_t)n, type, stream);
    end_call(lc, i, stream);
}

// --nccl-register: the NcclBuffer of the allocation that holds ptr, registered on comm (the
// first time: ncclCommRegister of the whole allocation); NULL if ptr is not NCCL's memory. A
// refusal by NCCL stops the run: the ranks must not go on disagreeing about a buffer.
static NcclBuffer *registered_on(LayerComm *lc, TpComm *comm, const void *ptr) {
    NcclBuffer *b = NULL;
    for (int i = 0; i < lc->num_registered && !b; i++) {
        NcclBuffer *r = &lc->registered[i];
        if ((const char *)ptr >= (const char *)r->ptr && (const char *)ptr < (const char *)r->ptr + r->bytes) b = r;
    }
    if (!b) {
        void *base;
        size_t bytes;
        const DevAllocator *by;
        if (!dev_find_allocation(ptr, &base, &bytes, &by) || by != &NCCL_MEM_ALLOCATOR) return NULL;
        if (lc->num_registered == LAYER_COMM_MAX_REGISTERED)
            DIE("--nccl-register: more than %d buffers to register", LAYER_COMM_MAX_REGISTERED);
        b = &lc->registered[lc->num_registered++];
        nccl_buffer_adopt(b, base, bytes);
    }
    for (int j = 0; j < b->regs; j++)
        if (b->reg[j].owner == comm) return b;
    char why[320];
    if (nccl_buffer_register(b, comm, why, sizeof why))
        fail_user("rank %d: --nccl-register: %s (a buffer of %.1f MiB)", comm->rank, why, b->bytes / 1048576.0);
    return b;
}

static void all_gather_on(LayerComm *lc, TpComm *comm, const void *slice, void *full, int64_t n, DType dtype,
                          cudaStream_t stream) {
    const int w = comm->world;
    if (w == 1) {  // the gathered tensor is the slice
        tp_all_gather(comm, slice, full, (size_t)n, nccl_type(dtype), stream);
        return;
    }
    if (lc->opt.nccl_register) {
        const NcclBuffer *from = registered_on(lc, comm, slice), *to = registered_on(lc, comm, full);
        if (from && to) lc->gathers_registered++;
        else lc->gathers_unregistered++;
    }
    int i = begin_call(lc, stream, (double)n * w * 2, (double)(w - 1) / w);
    tp_all_gather(comm, slice, full, (size_t)n, nccl_type(dtype), stream);
    end_call(lc, i, stream);
}

static void reduce_scatter_on(LayerComm *lc, TpComm *comm, const void *full, void *slice, int64_t n, DType dtype,
                              cudaStream_t stream) {
    const int w = comm->world;
    if (w == 1) {
        tp_reduce_scatter(comm, full, slice, (size_t)n, nccl_type(dtype), stream);
        return;
    }
    int i = begin_call(lc, stream, (double)n * w * 2, (double)(w - 1) / w);
    tp_reduce_scatter(comm, full, slice, (size_t)n, nccl_type(dtype), stream);
    end_call(lc, i, stream);
}

// Before a collective on the main communicator: with a second communicator for the started
// ones (side_ctas), nothing of it may still run. NCCL orders the kernels of ONE communicator
// whatever their streams, but two communicators' kernels running at once can deadlock (each
// rank's blocks of one waiting for the peer's blocks of the other, which CUDA does not promise
// to schedule). Only SP's started gradient group can be outstanding here (the next half's
// all-gather follows it): a small wait.
static void before_main_comm(LayerComm *lc) {
    if (lc->side_comm_owned) layer_join_side(lc);
}

void layer_all_reduce(LayerComm *lc, void *buf, int64_t n, DType dtype) {
    before_main_comm(lc);
    all_reduce_on(lc, lc->comm, buf, n, nccl_type(dtype), 2, 0);
}

void layer_all_reduce_f32(LayerComm *lc, float *buf, int64_t n) {
    before_main_comm(lc);
    all_reduce_on(lc, lc->comm, buf, n, ncclFloat32, 4, 0);
}

void layer_all_gather(LayerComm *lc, const void *slice, void *full, int64_t n, DType dtype) {
    before_main_comm(lc);
    all_gather_on(lc, lc->comm, slice, full, n, dtype, 0);
}

void layer_reduce_scatter(LayerComm *lc, const void *full, void *slice, int64_t n, DType dtype) {
    before_main_comm(lc);
    reduce_scatter_on(lc, lc->comm, full, slice, n, dtype, 0);
}

// ---- Started collectives ------------------------------------------------------------------------
// Where a started collective runs. Overlapped: the side stream, once the default stream has
// done everything enqueued so far (the event `ready`). In line: the default stream, now.
static cudaStream_t start_stream(LayerComm *lc) {
    if (!lc->opt.overlap) return 0;
    CUDA_CHECK(cudaEventRecord(lc->ready, 0));
    CUDA_CHECK(cudaStreamWaitEvent(lc->side, lc->ready, 0));
    return lc->side;
}

static TpComm *start_comm(LayerComm *lc) { return lc->side_comm_owned ? &lc->side_comm : lc->comm; }

// After a started collective: its completion event (nothing to record in line).
static void started(LayerComm *lc, cudaEvent_t done) {
    if (lc->opt.overlap) CUDA_CHECK(cudaEventRecord(done, lc->side));
}

// A started gradient collective (all-reduce, reduce-scatter): the GEMM enqueued next runs
// beside it, so (--overlap-sm-margin) it is planned for the SMs the collective leaves, until
// the wait. Not the started all-gathers: under sequence parallelism they run beside a GEMM
// on the rank's own rows or start long before their GEMM (the re-gathers), and planning those
// for fewer SMs cost more than it saved (2 x H200, 2026-11-30: SP 10.08 -> 10.72 ms).
static void started_beside_gemm(LayerComm *lc, cudaEvent_t done) {
    started(lc, done);
    if (lc->gemm_sms_beside) gemm_set_sm_count_target(lc->gemm_sms_beside);
}

// The default stream waits (on the GPU) for the side stream's `done` (in line: nothing to wait for).
static void wait_for(LayerComm *lc, cudaEvent_t done) {
    if (lc->opt.overlap) CUDA_CHECK(cudaStreamWaitEvent(0, done, 0));
    if (lc->gemm_sms_beside) gemm_set_sm_count_target(0);
}

void layer_all_gather_start(LayerComm *lc, const void *slice, void *full, int64_t n, DType dtype) {
    all_gather_on(lc, start_comm(lc), slice, full, n, dtype, start_stream(lc));
    started(lc, lc->gathered);
}

void layer_all_reduce_start(LayerComm *lc, void *buf, int64_t n, DType dtype) {
    if (lc->comm->world == 1) return;
    all_reduce_on(lc, start_comm(lc), buf, n, nccl_type(dtype), 2, start_stream(lc));
    started_beside_gemm(lc, lc->reduced);
}

void layer_reduce_scatter_start(LayerComm *lc, const void *full, void *slice, int64_t n, DType dtype) {
    reduce_scatter_on(lc, start_comm(lc), full, slice, n, dtype, start_stream(lc));
    started_beside_gemm(lc, lc->reduced);
}

void layer_all_reduce_group_start(LayerComm *lc, void *const *bufs, const int64_t *n, int k, DType dtype) {
    const int w = lc->comm->world;
    if (w == 1) return;
    enum { MAX_GROUP = 8 };
    if (k > MAX_GROUP) DIE("a group of %d all-reduces (at most %d)", k, MAX_GROUP);
    size_t counts[MAX_GROUP];
    double bytes = 0.0;
    for (int j = 0; j < k; j++) counts[j] = (size_t)n[j], bytes += (double)n[j] * 2;
    cudaStream_t stream = start_stream(lc);
    int i = begin_call(lc, stream, bytes, 2.0 * (w - 1) / w);
    tp_all_reduce_group(start_comm(lc), bufs, counts, k, nccl_type(dtype), stream);
    end_call(lc, i, stream);
    started_beside_gemm(lc, lc->reduced);
}

void layer_wait_gathered(LayerComm *lc) { wait_for(lc, lc->gathered); }

void layer_wait_reduced(LayerComm *lc) { wait_for(lc, lc->reduced); }

void layer_join_side(LayerComm *lc) {
    if (lc->gemm_sms_beside) gemm_set_sm_count_target(0);
    if (!lc->opt.overlap) return;
    CUDA_CHECK(cudaEventRecord(lc->joined, lc->side));
    CUDA_CHECK(cudaStreamWaitEvent(0, lc->joined, 0));
}

// ---- The region's end ---------------------------------------------------------------------
void layer_leave_region(LayerComm *lc, int sp, void *partial, void *loc, int64_t loc_n, DType dtype, int start) {
    if (sp) {
        if (start) layer_reduce_scatter_start(lc, partial, loc, loc_n, dtype);
        else layer_reduce_scatter(lc, partial, loc, loc_n, dtype);
        return;
    }
    if (loc != partial) DIE("plain TP leaves the region in place: the slice is the whole tensor");
    if (start) layer_all_reduce_start(lc, partial, loc_n, dtype);
    else layer_all_reduce(lc, partial, loc_n, dtype);
}
