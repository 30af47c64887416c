// The collectives' sweep against NCCL's own and NCCL's registered-buffer features: see tp_sweep.h.
#include "steps/07_tensor_parallel/tp_sweep.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/errors.h"
#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu.h"
#include "common/gpu/nccl_check.h"
#include "modules/gemm.h"
#include "steps/07_tensor_parallel/nccl_window.h"

enum { SWEEP_WARMUP = 3, SWEEP_ITERS = 20 };
enum { OVERLAP_ROUNDS = 3 };                       // timed rounds of the GEMM-beside test, after one untimed
static const double OVERLAP_WINDOW_US = 3000.0;    // each round's collectives last at least this long alone
static const int64_t SWEEP_MAX_ELEMS = (int64_t)1 << 27;  // 256 MiB of 16-bit values
static const int64_t CHECK_MAX_ELEMS = (int64_t)1 << 25;  // the largest size checked (64 MiB)

typedef enum { OP_ALL_REDUCE, OP_ALL_GATHER, OP_REDUCE_SCATTER, NUM_OPS } Op;
static const char *const OP_NAMES[NUM_OPS] = {"all-reduce", "all-gather", "reduce-scatter"};

// The columns. Every variant calls NCCL bare; they differ in communicator and buffers.
typedef enum { V_PLAIN, V_REGISTERED, V_WINDOW, V_WINDOW_EFFICIENCY, V_WINDOW_ZERO, NUM_VARIANTS } VariantId;
static const char *const VARIANT_NAMES[NUM_VARIANTS] = {"plain", "registered", "window", "window+efficiency",
                                                        "window+zero"};

typedef struct {
    ncclComm_t comm;  // NULL: not available (why says why)
    void *a, *b;      // all-reduce in place on a; all-gather a[n / w] -> b[n]; reduce-scatter a[n] -> b[n / w]
    int usable[NUM_OPS];   // agreed by every rank: set up, and its check call returned
    int wrong[NUM_OPS];    // its output differed from the exact sum (on this rank)
    char why[320];
} Variant;

typedef struct {
    TpComm *ours;        // tp_all_reduce: our communicator, watchdog armed around each call
    TpComm plain;        // split: the yardstick (bare NCCL) and the registered and window columns
    TpComm efficiency;   // split with CTAPolicy EFFICIENCY (the window+efficiency column)
    TpComm zero;         // split with CTAPolicy ZERO (the window+zero column)
    void *plain_a, *plain_b;               // cudaMalloc'd (dev_alloc)
    NcclBuffer registered_a, registered_b; // ncclMemAlloc'd, ncclCommRegister'd on plain
    // ncclMemAlloc'd, a pair per window column (plain, efficiency, zero): NCCL leaves host calls on
    // a buffer registered as a symmetric window on more than one communicator undefined.
    NcclBuffer window_a[3], window_b[3];
    Variant v[NUM_VARIANTS];
    ncclDataType_t type;
    DType dtype;
    cudaEvent_t start, stop;
} Sweep;

// ---- One call of one variant ---------------------------------------------------------------
// n: the collective's [T, h]-like size in elements (all-gather's output, reduce-scatter's input).
static ncclResult_t enqueue(const Sweep *s, const Variant *v, Op op, int64_t n, cudaStream_t stream) {
    const size_t slice = (size_t)(n / s->ours->world);
    switch (op) {
        case OP_ALL_REDUCE: return ncclAllReduce(v->a, v->a, (size_t)n, s->type, ncclSum, v->comm, stream);
        case OP_ALL_GATHER: return ncclAllGather(v->a, v->b, slice, s->type, v->comm, stream);
        default: return ncclReduceScatter(v->a, v->b, slice, s->type, ncclSum, v->comm, stream);
    }
}

// n rounded down to a multiple of the world size (all-gather and reduce-scatter split it).
static int64_t op_elems(const Sweep *s, Op op, int64_t n) {
    return op == OP_ALL_REDUCE ? n : n / s->ours->world * s->ours->world;
}

// Microseconds per call of `SWEEP_ITERS` back-to-back calls (after SWEEP_WARMUP untimed ones,
// under the watchdog: a first call at a size may set up connections). v NULL: ours.
static double time_calls(Sweep *s, const Variant *v, Op op, int64_t n) {
    tp_watchdog_begin_region(s->ours, "enqueuing the sweep's collectives");
    for (int i = 0; i < SWEEP_WARMUP + SWEEP_ITERS; i++) {
        if (i == SWEEP_WARMUP) CUDA_CHECK(cudaEventRecord(s->start, 0));
        if (!v) {
            tp_all_reduce(s->ours, s->plain_a, (size_t)n, s->type, 0);
            continue;
        }
        if (i < SWEEP_WARMUP) tp_watchdog_arm(s->ours, "a collective of the sweep");
        ncclResult_t r = enqueue(s, v, op, n, 0);
        if (i < SWEEP_WARMUP) tp_watchdog_disarm();
        if (r != ncclSuccess)
            DIE("the sweep's %s (%s column) at %lld elements: %s (%s); its check call had succeeded", OP_NAMES[op],
                VARIANT_NAMES[v - s->v], (long long)n, ncclGetErrorString(r), ncclGetLastError(NULL));
    }
    CUDA_CHECK(cudaEventRecord(s->stop, 0));
    tp_watchdog_end_region();
    tp_sync(s->ours, 0, "the collectives' sweep");
    float ms;
    CUDA_CHECK(cudaEventElapsedTime(&ms, s->start, s->stop));
    return 1e3 * ms / SWEEP_ITERS;
}

// ---- Setting the variants up -----------------------------------------------------------------
// A variant's communicator and buffers, or (comm NULL) why not.
static void offer(Variant *v, ncclComm_t comm, void *a, void *b) { v->comm = comm, v->a = a, v->b = b; }
static void refuse(Variant *v, const char *why) {
    v->comm = NULL;
    if (!v->why[0]) snprintf(v->why, sizeof v->why, "%s", why);
}

// Every step collective, every rank the same calls in the same order; a step refused on any
// rank is refused on all (tp_all_ranks_ok), so that no rank waits for a peer's call.
static void set_up(Sweep *s, size_t bytes) {
    char why[320] = "";
    TpComm *c = s->ours;
    s->plain = *c;
    s->plain.comm = tp_comm_split_plain(c);  // exits on failure: the yardstick must exist
    s->plain_a = dev_alloc(bytes), s->plain_b = dev_alloc(bytes);
    CUDA_CHECK(cudaMemset(s->plain_a, 0, bytes));
    CUDA_CHECK(cudaMemset(s->plain_b, 0, bytes));
    offer(&s->v[V_PLAIN], s->plain.comm, s->plain_a, s->plain_b);

    // registered: ncclMemAlloc + ncclCommRegister on the yardstick's communicator.
    int ok = !nccl_buffer_alloc(&s->registered_a, bytes, why, sizeof why) &&
             !nccl_buffer_alloc(&s->registered_b, bytes, why, sizeof why);
    if (!tp_all_ranks_ok(c, ok)) refuse(&s->v[V_REGISTERED], why[0] ? why : "ncclMemAlloc failed on another rank");
    else {
        ok = !nccl_buffer_register(&s->registered_a, &s->plain, why, sizeof why) &&
             !nccl_buffer_register(&s->registered_b, &s->plain, why, sizeof why);
        if (tp_all_ranks_ok(c, ok)) offer(&s->v[V_REGISTERED], s->plain.comm, s->registered_a.ptr, s->registered_b.ptr);
        else refuse(&s->v[V_REGISTERED], why[0] ? why : "ncclCommRegister failed on another rank");
    }

    // The window columns: a pair of ncclMemAlloc buffers each, a window on its own communicator.
    struct { VariantId id; TpCtaPolicy policy; TpComm *comm; } windows[] = {
        {V_WINDOW, TP_CTA_POLICY_UNSET, &s->plain},
        {V_WINDOW_EFFICIENCY, TP_CTA_POLICY_EFFICIENCY, &s->efficiency},
        {V_WINDOW_ZERO, TP_CTA_POLICY_ZERO, &s->zero},
    };
    for (size_t i = 0; i < sizeof windows / sizeof windows[0]; i++) {
        Variant *v = &s->v[windows[i].id];
        NcclBuffer *a = &s->window_a[i], *b = &s->window_b[i];
        char cwhy[320] = "";
        ok = !nccl_buffer_alloc(a, bytes, cwhy, sizeof cwhy) && !nccl_buffer_alloc(b, bytes, cwhy, sizeof cwhy);
        if (!tp_all_ranks_ok(c, ok)) {
            refuse(v, cwhy[0] ? cwhy : "ncclMemAlloc failed on another rank");
            continue;
        }
        if (windows[i].comm != &s->plain) {  // a communicator of this CTA policy
            ok = !tp_comm_split_config(c, windows[i].policy, 0, windows[i].comm, cwhy, sizeof cwhy);
            if (!tp_all_ranks_ok(c, ok)) {
                if (windows[i].comm->comm) tp_comm_destroy(windows[i].comm);
                refuse(v, cwhy[0] ? cwhy : "the split failed on another rank");
                continue;
            }
        }
        ok = !nccl_buffer_register_window(a, windows[i].comm, cwhy, sizeof cwhy) &&
             !nccl_buffer_register_window(b, windows[i].comm, cwhy, sizeof cwhy);
        if (tp_all_ranks_ok(c, ok)) offer(v, windows[i].comm->comm, a->ptr, b->ptr);
        else refuse(v, cwhy[0] ? cwhy : "ncclCommWindowRegister failed on another rank");
    }
}

static void tear_down(Sweep *s) {
    // Buffers leave NCCL before their communicators are destroyed.
    for (int i = 0; i < 3; i++) nccl_buffer_free(&s->window_b[i]), nccl_buffer_free(&s->window_a[i]);
    nccl_buffer_free(&s->registered_b), nccl_buffer_free(&s->registered_a);
    dev_free(s->plain_a), dev_free(s->plain_b);
    if (s->zero.comm) tp_comm_destroy(&s->zero);
    if (s->efficiency.comm) tp_comm_destroy(&s->efficiency);
    tp_watchdog_arm(s->ours, "destroying the yardstick's communicator");
    NCCL_CHECK(ncclCommDestroy(s->plain.comm));
    tp_watchdog_disarm();
}

// ---- Checking each variant's output ------------------------------------------------------------
// Small integers, exact in fp16 and bf16 and in their sums over up to 8 ranks.
static float pattern(int64_t i, int rank) { return (float)(i % 16 + rank); }
static float summed(int64_t i, int world) { return (float)(world * (i % 16) + world * (world - 1) / 2); }

// Runs op at n elements with known inputs; 0 if NCCL refused the call, 1 if it ran (then
// *wrong says whether the output differs).
static int check_call(Sweep *s, Variant *v, Op op, int64_t n, float *host, int *wrong) {
    const int w = s->ours->world, r = s->ours->rank;
    const int64_t slice = n / w, in_n = op == OP_ALL_GATHER ? slice : n, out_n = op == OP_REDUCE_SCATTER ? slice : n;
    for (int64_t i = 0; i < in_n; i++) host[i] = pattern(i, r);
    dev_upload_to(v->a, host, in_n, s->dtype);
    tp_watchdog_arm(s->ours, "the sweep's check of a collective");
    ncclResult_t res = enqueue(s, v, op, n, 0);
    tp_watchdog_disarm();
    if (res != ncclSuccess) {
        snprintf(v->why, sizeof v->why, "%s: %s (%s)", OP_NAMES[op], ncclGetErrorString(res), ncclGetLastError(NULL));
        return 0;
    }
    tp_sync(s->ours, 0, "the sweep's check of a collective");
    dev_download(host, op == OP_ALL_REDUCE ? v->a : v->b, out_n, s->dtype);
    for (int64_t i = 0; i < out_n; i++) {
        const float want = op == OP_ALL_REDUCE ? summed(i, w)
                           : op == OP_ALL_GATHER ? pattern(i % slice, (int)(i / slice))
                                                 : summed(r * slice + i, w);
        if (host[i] != want) {
            if (!*wrong)
                printf("rank %d: %s, %s column, %lld elements: element %lld is %g, expected %g\n", r, OP_NAMES[op],
                       VARIANT_NAMES[v - s->v], (long long)n, (long long)i, host[i], want);
            *wrong = 1;
            break;
        }
    }
    return 1;
}

// Every available variant's every collective, at a small size and at `big`: does it run on
// every rank, and does it compute the sum?
static void check_variants(Sweep *s, int64_t big) {
    const int64_t sizes[] = {op_elems(s, OP_ALL_GATHER, (int64_t)1 << 16), op_elems(s, OP_ALL_GATHER, big)};
    float *host = xmalloc((size_t)sizes[1] * sizeof(float));
    for (int k = 0; k < NUM_VARIANTS; k++) {
        Variant *v = &s->v[k];
        for (int op = 0; op < NUM_OPS; op++) {
            int ran = v->comm != NULL;
            for (int j = 0; j < 2 && ran; j++) ran = check_call(s, v, (Op)op, sizes[j], host, &v->wrong[op]);
            v->usable[op] = tp_all_ranks_ok(s->ours, ran);
        }
    }
    free(host);
}

// ---- The tables ------------------------------------------------------------------------------
static void print_cell_us(const Sweep *s, VariantId k, Op op, double us) {
    if (!s->v[k].usable[op]) printf(" %10s |", "n/a");
    else printf(" %9.1f%s |", us, s->v[k].wrong[op] ? "!" : " ");
}

// Bus bandwidth in GB/s of `bus` bytes in `us`, in a cell `width` wide (n/a when unusable).
static void print_bus(const Sweep *s, VariantId k, Op op, double bus, double us, int width) {
    if (s->v[k].usable[op]) printf(" %*.1f |", width, bus / us / 1e3);
    else printf(" %*s |", width, "n/a");
}

static void print_notes(const Sweep *s, Op op) {
    for (int k = 0; k < NUM_VARIANTS; k++) {
        const Variant *v = &s->v[k];
        if (!v->usable[op]) printf("  n/a %s: %s\n", VARIANT_NAMES[k], v->why[0] ? v->why : "refused on another rank");
        else if (v->wrong[op]) printf("  ! %s: WRONG results on rank 0 (see its message above)\n", VARIANT_NAMES[k]);
    }
}

// The all-reduce: ours and the yardstick as before, then the other variants.
static void all_reduce_table(Sweep *s, const int64_t *sizes, int count) {
    const int w = s->ours->world;
    if (s->ours->rank == 0) {
        printf("\nall-reduce (sum, %s) across %d GPUs, %d calls back to back per size: tp_all_reduce (blocking "
               "communicator, watchdog) against bare ncclAllReduce on a second blocking communicator (NCCL), then "
               "bare ncclAllReduce on the other columns' buffers and communicators\n",
               dtype_name(s->dtype), w, SWEEP_ITERS);
        printf("| %12s | %11s | %11s | %6s | %12s | %12s | %10s | %10s | %10s | %10s | %13s |\n", "bytes", "ours (us)",
               "NCCL (us)", "ratio", "ours bus GB/s", "NCCL bus GB/s", "registered", "window", "win+effic.",
               "win+zero", "window bus GB/s");
        printf("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    }
    for (int k = 0; k < count; k++) {
        const double bytes = (double)sizes[k] * 2, bus = 2.0 * (w - 1) / w * bytes;
        // In turns, so that all see the machine in the same state.
        double ours = time_calls(s, NULL, OP_ALL_REDUCE, sizes[k]);
        double t[NUM_VARIANTS] = {0};
        for (int v = 0; v < NUM_VARIANTS; v++)
            if (s->v[v].usable[OP_ALL_REDUCE]) t[v] = time_calls(s, &s->v[v], OP_ALL_REDUCE, sizes[k]);
        if (s->ours->rank != 0) continue;
        printf("| %12.0f | %11.1f | %11.1f | %6.2f | %12.1f | %12.1f |", bytes, ours, t[V_PLAIN], ours / t[V_PLAIN],
               bus / ours / 1e3, bus / t[V_PLAIN] / 1e3);
        for (int v = V_REGISTERED; v < NUM_VARIANTS; v++) print_cell_us(s, (VariantId)v, OP_ALL_REDUCE, t[v]);
        print_bus(s, V_WINDOW, OP_ALL_REDUCE, bus, t[V_WINDOW], 13);
        printf("%s\n", k == count - 1 ? "  <- the layer's [T, h]" : "");
    }
    if (s->ours->rank == 0) print_notes(s, OP_ALL_REDUCE);
}

// All-gather or reduce-scatter: every variant, bare NCCL.
static void gather_scatter_table(Sweep *s, Op op, const int64_t *sizes, int count) {
    const int w = s->ours->world;
    if (s->ours->rank == 0) {
        printf("\n%s (%s) across %d GPUs, %d calls back to back per size; bytes: the whole [T, h] (%s), each rank's "
               "slice 1/%d of it\n", OP_NAMES[op], dtype_name(s->dtype), w, SWEEP_ITERS,
               op == OP_ALL_GATHER ? "the output" : "the input", w);
        printf("| %12s | %10s | %10s | %10s | %10s | %10s | %14s | %15s |\n", "bytes", "plain (us)", "registered",
               "window", "win+effic.", "win+zero", "plain bus GB/s", "window bus GB/s");
        printf("|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    }
    for (int k = 0; k < count; k++) {
        const int64_t n = op_elems(s, op, sizes[k]);
        const double bytes = (double)n * 2, bus = (double)(w - 1) / w * bytes;
        double t[NUM_VARIANTS] = {0};
        for (int v = 0; v < NUM_VARIANTS; v++)
            if (s->v[v].usable[op]) t[v] = time_calls(s, &s->v[v], op, n);
        if (s->ours->rank != 0) continue;
        printf("| %12.0f |", bytes);
        for (int v = 0; v < NUM_VARIANTS; v++) print_cell_us(s, (VariantId)v, op, t[v]);
        print_bus(s, V_PLAIN, op, bus, t[V_PLAIN], 14);
        print_bus(s, V_WINDOW, op, bus, t[V_WINDOW], 15);
        printf("%s\n", k == count - 1 ? "  <- the layer's [T, h]" : "");
    }
    if (s->ours->rank == 0) print_notes(s, op);
}

// ---- A collective beside a GEMM ----------------------------------------------------------------
typedef struct {
    Gemm gemm;
    void *a, *b, *d;
    cudaStream_t side;  // highest priority, non-blocking: as the layer's overlap (layer_comm.h)
    cudaEvent_t begin, gemms_done, side_begin, side_done, all_done;
} Beside;

// FC1's forward on one rank: [T, h] x [h, ffn / tp] (cuBLASLt, column-major: m = ffn / tp,
// n = T, k = h), inputs filled with 0x3c bytes (fp16 1.06, bf16 0.0115: finite, nonzero).
static void beside_init(Beside *g, const LayerConfig *c, int world) {
    memset(g, 0, sizeof *g);
    const int64_t m = c->ffn / world, n = layer_tokens(c), k = c->hidden;
    g->a = dev_alloc((size_t)(m * k) * 2), g->b = dev_alloc((size_t)(k * n) * 2), g->d = dev_alloc((size_t)(m * n) * 2);
    CUDA_CHECK(cudaMemset(g->a, 0x3c, (size_t)(m * k) * 2));
    CUDA_CHECK(cudaMemset(g->b, 0x3c, (size_t)(k * n) * 2));
    g->gemm = (Gemm){.m = m, .n = n, .k = k, .a = g->a, .lda = m, .b = g->b, .ldb = k, .d = g->d, .ldd = m,
                     .epilogue = GEMM_EPILOGUE_NONE, .dtype = c->dtype};
    int least, greatest;
    CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    CUDA_CHECK(cudaStreamCreateWithPriority(&g->side, cudaStreamNonBlocking, greatest));
    cudaEvent_t *events[] = {&g->begin, &g->gemms_done, &g->side_begin, &g->side_done, &g->all_done};
    for (size_t i = 0; i < sizeof events / sizeof events[0]; i++) CUDA_CHECK(cudaEventCreate(events[i]));
}

static void beside_free(Beside *g) {
    dev_free(g->a), dev_free(g->b), dev_free(g->d);
    cudaStreamDestroy(g->side);
    cudaEvent_t events[] = {g->begin, g->gemms_done, g->side_begin, g->side_done, g->all_done};
    for (size_t i = 0; i < sizeof events / sizeof events[0]; i++) cudaEventDestroy(events[i]);
}

static float elapsed_us(cudaEvent_t a, cudaEvent_t b) {
    float ms;
    CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    return 1e3f * ms;
}

// Microseconds per GEMM of `gemms` back to back, alone.
static double gemm_alone_us(Sweep *s, Beside *g, int gemms) {
    CUDA_CHECK(cudaEventRecord(g->begin, 0));
    for (int i = 0; i < gemms; i++) gemm_run(&g->gemm);
    CUDA_CHECK(cudaEventRecord(g->gemms_done, 0));
    tp_sync(s->ours, 0, "the GEMMs alone");
    return elapsed_us(g->begin, g->gemms_done) / gemms;
}

typedef struct { double gemm_us, coll_us, both_us; } Together;

// `calls` collectives on the side stream and `gemms` GEMMs on the default stream, started
// together (the side stream first: it waits for an event of the default stream, as a started
// collective of the layer does). Per GEMM, per collective, and until both are done.
static Together run_together(Sweep *s, Beside *g, const Variant *v, Op op, int64_t n, int calls, int gemms) {
    tp_watchdog_begin_region(s->ours, "enqueuing a collective beside the GEMMs");
    CUDA_CHECK(cudaEventRecord(g->begin, 0));
    CUDA_CHECK(cudaStreamWaitEvent(g->side, g->begin, 0));
    CUDA_CHECK(cudaEventRecord(g->side_begin, g->side));
    for (int i = 0; i < calls; i++) NCCL_CHECK(enqueue(s, v, op, n, g->side));
    CUDA_CHECK(cudaEventRecord(g->side_done, g->side));
    for (int i = 0; i < gemms; i++) gemm_run(&g->gemm);
    CUDA_CHECK(cudaEventRecord(g->gemms_done, 0));
    CUDA_CHECK(cudaStreamWaitEvent(0, g->side_done, 0));
    CUDA_CHECK(cudaEventRecord(g->all_done, 0));
    tp_watchdog_end_region();
    tp_sync(s->ours, 0, "a collective beside the GEMMs");
    return (Together){elapsed_us(g->begin, g->gemms_done) / gemms, elapsed_us(g->side_begin, g->side_done) / calls,
                      elapsed_us(g->begin, g->all_done)};
}

// At the layer's [T, h]: for each collective and variant, the GEMM and the collective alone,
// then together with the same amount of work (about OVERLAP_WINDOW_US of collectives and as
// many GEMMs as last as long alone).
static void beside_gemm_table(Sweep *s, const LayerConfig *c, int64_t layer_elems) {
    Beside g;
    beside_init(&g, c, s->ours->world);
    for (int i = 0; i < 3; i++) gemm_run(&g.gemm);  // plans the GEMM (its algorithm, once)
    const double gemm_us = gemm_alone_us(s, &g, 10);
    if (s->ours->rank == 0) {
        printf("\nbeside a GEMM, at the layer's [T, h] = %lld elements: FC1's forward GEMM of one rank ([%lld, %d] x "
               "[%d, %d], %s; %.1f us alone) on the default stream, the collective on a side stream of the highest "
               "priority; the same work as alone, %d rounds after 1 untimed\n",
               (long long)layer_elems, (long long)layer_tokens(c), c->hidden, c->hidden, c->ffn / s->ours->world,
               dtype_name(c->dtype), gemm_us, OVERLAP_ROUNDS);
        printf("| %-14s | %-17s | %5s | %5s | %10s | %11s | %10s | %11s | %9s | %10s | %9s | %6s |\n", "collective",
               "variant", "calls", "GEMMs", "coll alone", "coll beside", "GEMM alone", "GEMM beside", "GEMM slow",
               "both done", "serial", "hidden");
        printf("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    }
    for (int op = 0; op < NUM_OPS; op++) {
        const int64_t n = op_elems(s, (Op)op, layer_elems);
        for (int k = 0; k < NUM_VARIANTS; k++) {
            const Variant *v = &s->v[k];
            if (!v->usable[op]) {
                if (s->ours->rank == 0) printf("| %-14s | %-17s | n/a (see the %s table) |\n", OP_NAMES[op], VARIANT_NAMES[k], OP_NAMES[op]);
                continue;
            }
            const double coll_us = time_calls(s, v, (Op)op, n);
            // Each rank timed the collective itself, and the times differ a little: the count
            // taken from them could differ by one between ranks, and then one rank would wait
            // for ever for a collective the other never calls (seen on 2 H200s at --preset
            // small, where a call takes about 10 us and a window holds hundreds). So the
            // ranks agree on the largest count.
            const int calls = tp_max_over_ranks(s->ours, (int)fmax(4.0, ceil(OVERLAP_WINDOW_US / coll_us)));
            const int gemms = (int)fmax(1.0, round(calls * coll_us / gemm_us));
            const double gemm_alone = gemm_alone_us(s, &g, gemms);
            run_together(s, &g, v, (Op)op, n, calls, gemms);  // untimed: the side stream's first use
            Together sum = {0, 0, 0};
            for (int r = 0; r < OVERLAP_ROUNDS; r++) {
                Together t = run_together(s, &g, v, (Op)op, n, calls, gemms);
                sum.gemm_us += t.gemm_us / OVERLAP_ROUNDS, sum.coll_us += t.coll_us / OVERLAP_ROUNDS;
                sum.both_us += t.both_us / OVERLAP_ROUNDS;
            }
            const double serial = calls * coll_us + gemms * gemm_alone;
            if (s->ours->rank == 0)
                printf("| %-14s | %-17s | %5d | %5d | %10.1f | %11.1f | %10.1f | %11.1f | %8.1f%% | %10.1f | %9.1f | "
                       "%5.0f%% |\n", OP_NAMES[op], VARIANT_NAMES[k], calls, gemms, coll_us, sum.coll_us, gemm_alone,
                       sum.gemm_us, 100.0 * (sum.gemm_us / gemm_alone - 1.0), sum.both_us, serial,
                       100.0 * (serial - sum.both_us) / (calls * coll_us));
        }
    }
    beside_free(&g);
}

// ---- The whole sweep -------------------------------------------------------------------------
static void print_setup(const Sweep *s) {
    char built[32], loaded[32];
    const char *nvls = getenv("NCCL_NVLS_ENABLE");
    printf("\nNCCL: built with %s's headers, running %s; NCCL_NVLS_ENABLE=%s. Columns (each a bare NCCL call): "
           "plain = cudaMalloc'd buffers, a split of our communicator (the yardstick); registered = ncclMemAlloc'd "
           "buffers, ncclCommRegister'd on it; window = ncclMemAlloc'd, registered on it as symmetric windows "
           "(ncclCommWindowRegister, NCCL_WIN_COLL_SYMMETRIC); win+effic. / win+zero = their own such buffers as windows of "
           "a communicator split with CTAPolicy EFFICIENCY / ZERO. Every column's output was checked against the "
           "exact sum at 2^16 elements and the layer's [T, h] (at most 2^25) first; '!' marks a wrong one.\n",
           nccl_build_version(built, sizeof built), nccl_runtime_version(loaded, sizeof loaded), nvls ? nvls : "(unset)");
    for (int k = 0; k < NUM_VARIANTS; k++)
        if (!s->v[k].comm) printf("  %s: not set up: %s\n", VARIANT_NAMES[k], s->v[k].why);
}

void collective_sweep(TpComm *comm, const LayerConfig *c) {
    if (comm->world == 1) return;
    const int64_t layer_elems = layer_tokens(c) * c->hidden;
    Sweep s;
    memset(&s, 0, sizeof s);
    s.ours = comm, s.dtype = c->dtype, s.type = c->dtype == DTYPE_BF16 ? ncclBfloat16 : ncclHalf;
    const int64_t max_elems = SWEEP_MAX_ELEMS;
    set_up(&s, (size_t)max_elems * 2);
    CUDA_CHECK(cudaEventCreate(&s.start));
    CUDA_CHECK(cudaEventCreate(&s.stop));
    check_variants(&s, layer_elems < CHECK_MAX_ELEMS ? layer_elems : CHECK_MAX_ELEMS);
    if (comm->rank == 0) print_setup(&s);
    const int64_t layer_n = layer_elems < max_elems ? layer_elems : max_elems;
    const int64_t sizes[] = {(int64_t)1 << 15, (int64_t)1 << 19, (int64_t)1 << 21, (int64_t)1 << 23,
                             (int64_t)1 << 25, (int64_t)1 << 27, layer_n};
    const int count = (int)(sizeof sizes / sizeof sizes[0]);
    all_reduce_table(&s, sizes, count);
    gather_scatter_table(&s, OP_ALL_GATHER, sizes, count);
    gather_scatter_table(&s, OP_REDUCE_SCATTER, sizes, count);
    fflush(stdout);
    beside_gemm_table(&s, c, layer_n);
    fflush(stdout);
    cudaEventDestroy(s.start), cudaEventDestroy(s.stop);
    tear_down(&s);
}
