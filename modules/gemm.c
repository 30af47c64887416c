#include "modules/gemm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu.h"

// What identifies a plan: everything cuBLASLt's heuristic looks at except the pointers'
// values (all our device pointers are 256-byte aligned).
typedef struct {
    int trans_a, trans_b, has_c, epilogue, dtype;
    int deterministic;  // planned under gemm_set_deterministic(1)
    int sm_count_target;  // planned for this many SMs (gemm_set_sm_count_target; 0: the device's)
    int64_t m, n, k, lda, ldb, ldd, aux_ld;
} PlanKey;

typedef struct {
    PlanKey key;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, c, d;
    cublasLtMatmulAlgo_t algo;
} Plan;

// One plan per GEMM shape, epilogue and mode seen by this process. A step needs a dozen; a test
// program that runs every step at several sizes, with and without --deterministic (whose plans
// are kept apart), needed more than 128 on the H200 (modules_test, 2026-11-29). Plans are
// handed out by address, so the table does not move: a fixed size, generous.
enum { MAX_PLANS = 1024 };
static Plan plans[MAX_PLANS];
static int num_plans;
static long cache_hits;

void gemm_cache_stats(int *n, long *hits) {
    *n = num_plans;
    *hits = cache_hits;
}

static cublasLtEpilogue_t lt_epilogue(GemmEpilogue e) {
    switch (e) {
        case GEMM_EPILOGUE_BIAS: return CUBLASLT_EPILOGUE_BIAS;
        case GEMM_EPILOGUE_GELU_AUX_BIAS: return CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
        case GEMM_EPILOGUE_DGELU_BGRAD: return CUBLASLT_EPILOGUE_DGELU_BGRAD;
        case GEMM_EPILOGUE_DGELU: return CUBLASLT_EPILOGUE_DGELU;
        case GEMM_EPILOGUE_BGRADB: return CUBLASLT_EPILOGUE_BGRADB;
        default: return CUBLASLT_EPILOGUE_DEFAULT;
    }
}

static int reads_or_writes_aux(GemmEpilogue e) {
    return e == GEMM_EPILOGUE_GELU_AUX_BIAS || e == GEMM_EPILOGUE_DGELU_BGRAD || e == GEMM_EPILOGUE_DGELU;
}

static void set_pointers(cublasLtMatmulDesc_t desc, const Gemm *g) {
    if (g->epilogue != GEMM_EPILOGUE_NONE && g->epilogue != GEMM_EPILOGUE_DGELU)
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g->bias,
                                                    sizeof g->bias));
    if (reads_or_writes_aux(g->epilogue))
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER,
                                                    &g->aux, sizeof g->aux));
}

enum { MAX_CANDIDATES = 8 };
int gemm_autotune = -1;
static int deterministic;
static int sm_count_target;

void gemm_set_sm_count_target(int sms) { sm_count_target = sms > 0 ? sms : 0; }

void gemm_set_deterministic(int on) { deterministic = on != 0; }
int gemm_deterministic(void) { return deterministic; }

uint32_t gemm_reduction_schemes(void) {
    return deterministic ? CUBLASLT_REDUCTION_SCHEME_MASK & ~CUBLASLT_REDUCTION_SCHEME_INPLACE
                         : CUBLASLT_REDUCTION_SCHEME_MASK;
}

static void run_plan(const Plan *p, const Gemm *g, const cublasLtMatmulAlgo_t *algo, const GemmStream *where);

// Times each candidate (the fastest of 5 runs after two warm-ups: the minimum is the most
// repeatable statistic for a kernel this long) and returns the fastest.
static cublasLtMatmulAlgo_t fastest(const Plan *p, const Gemm *g, const cublasLtMatmulHeuristicResult_t *r,
                                    int n, const GemmStream *where) {
    const cudaStream_t stream = where ? where->stream : 0;
    cudaEvent_t start, stop;
    CUDA_CHECK(cudaEventCreate(&start));
    CUDA_CHECK(cudaEventCreate(&stop));
    int best = 0;
    float best_ms = 1e30f;
    for (int i = 0; i < n; i++) {
        run_plan(p, g, &r[i].algo, where);
        run_plan(p, g, &r[i].algo, where);
        float fastest_run = 1e30f;
        for (int k = 0; k < 5; k++) {
            float t;
            CUDA_CHECK(cudaEventRecord(start, stream));
            run_plan(p, g, &r[i].algo, where);
            CUDA_CHECK(cudaEventRecord(stop, stream));
            CUDA_CHECK(cudaEventSynchronize(stop));
            CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
            if (t < fastest_run) fastest_run = t;
        }
        if (fastest_run < best_ms) best_ms = fastest_run, best = i;
    }
    CUDA_CHECK(cudaEventDestroy(start));
    CUDA_CHECK(cudaEventDestroy(stop));
    return r[best].algo;
}

// gemm_autotune if set, else the environment's GEMM_AUTOTUNE (off unless it is 1). Never when
// deterministic: timing may pick another algorithm on another run (said once).
static int autotune_in_env(void) {
    const char *env = getenv("GEMM_AUTOTUNE");
    if (!env || !*env || !strcmp(env, "0")) return 0;
    if (!strcmp(env, "1")) return 1;
    fail_user("GEMM_AUTOTUNE=%s: expected 1 (time the heuristic's candidates) or 0 (its first choice)", env);
}

void gemm_require_valid_switches(void) { (void)autotune_in_env(); }

static int autotuning(void) {
    const int asked = gemm_autotune >= 0 ? gemm_autotune : autotune_in_env();
    if (asked && deterministic) {
        static int told;
        if (!told) fprintf(stderr, "note: GEMM autotuning is off in deterministic mode (timing may pick another "
                                   "algorithm on another run)\n");
        told = 1;
        return 0;
    }
    return asked;
}

void gemm_require_reduction_scheme(const cublasLtMatmulAlgo_t *algo) {
    uint32_t scheme = 0;
    size_t written = 0;
    CUBLAS_CHECK(cublasLtMatmulAlgoConfigGetAttribute(algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &scheme,
                                                      sizeof scheme, &written));
    if (scheme & ~gemm_reduction_schemes())
        DIE("cuBLASLt chose an algorithm with reduction scheme %u, which the preference excluded", scheme);
}

static Plan *make_plan(const PlanKey *key, const Gemm *g, const GemmStream *where) {
    if (num_plans == MAX_PLANS) DIE("more than %d GEMM shapes: raise MAX_PLANS", MAX_PLANS);
    Plan *p = &plans[num_plans];
    p->key = *key;
    cudaDataType_t t = g->dtype == DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_16F;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t ta = g->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, tb = g->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    cublasLtEpilogue_t epi = lt_epilogue(g->epilogue);
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    if (reads_or_writes_aux(g->epilogue))
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD,
                                                    &g->aux_ld, sizeof g->aux_ld));
    if (key->sm_count_target > 0)
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET,
                                                    &key->sm_count_target, sizeof key->sm_count_target));
    set_pointers(p->desc, g);
    // Stored shapes: op(A) is m x k, so A itself is m x k or k x m; likewise B.
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->a, t, g->trans_a ? g->k : g->m, g->trans_a ? g->m : g->k, g->lda));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->b, t, g->trans_b ? g->n : g->k, g->trans_b ? g->k : g->n, g->ldb));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->c, t, g->m, g->n, g->ldd));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->d, t, g->m, g->n, g->ldd));
    cublasLtMatmulPreference_t pref;
    size_t ws_bytes;
    gpu_workspace(&ws_bytes);
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                      &ws_bytes, sizeof ws_bytes));
    if (deterministic) {
        const uint32_t schemes = gemm_reduction_schemes();
        CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &schemes,
                                                          sizeof schemes));
    }
    const int tune = autotuning();
    cublasLtMatmulHeuristicResult_t results[MAX_CANDIDATES];
    int found = 0;
    CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic((cublasLtHandle_t)gpu_cublaslt_handle(), p->desc, p->a,
                                                p->b, p->c, p->d, pref, tune ? MAX_CANDIDATES : 1,
                                                results, &found));
    cublasLtMatmulPreferenceDestroy(pref);
    if (!found)
        DIE("cuBLASLt has no algorithm for m=%lld n=%lld k=%lld (trans %d%d, epilogue %d)",
            (long long)g->m, (long long)g->n, (long long)g->k, g->trans_a, g->trans_b, g->epilogue);
    p->algo = results[0].algo;
    // The heuristic's first choice is good, not always best (notably with epilogues): if
    // asked, time its candidates once on the real operands and keep the fastest. Not when D
    // is also C: the trial runs would add the residual more than once.
    if (tune && found > 1 && g->c != g->d) p->algo = fastest(p, g, results, found, where);
    if (deterministic) gemm_require_reduction_scheme(&p->algo);
    num_plans++;
    return p;
}

static Plan *find_plan(const Gemm *g, const GemmStream *where) {
    PlanKey key;
    memset(&key, 0, sizeof key);  // padding too: keys are compared with memcmp
    key.trans_a = g->trans_a, key.trans_b = g->trans_b, key.has_c = g->c != NULL;
    key.deterministic = deterministic;
    // Not under deterministic mode: another SM count may mean another algorithm, and
    // another split of K rounds differently - the overlapped and in-line schedules must agree.
    key.sm_count_target = deterministic ? 0 : sm_count_target;
    key.epilogue = g->epilogue, key.dtype = g->dtype;
    key.m = g->m, key.n = g->n, key.k = g->k;
    key.lda = g->lda, key.ldb = g->ldb, key.ldd = g->ldd, key.aux_ld = g->aux_ld;
    for (int i = 0; i < num_plans; i++) {
        if (!memcmp(&plans[i].key, &key, sizeof key)) {
            cache_hits++;
            return &plans[i];
        }
    }
    return make_plan(&key, g, where);
}

// Enqueues the product on `where`'s stream with its workspace, or (NULL) on the default
// stream with the shared one. (set_pointers changes the plan's descriptor, which cuBLASLt
// reads while it enqueues: a later call with other pointers cannot change this one's.)
static void run_plan(const Plan *p, const Gemm *g, const cublasLtMatmulAlgo_t *algo, const GemmStream *where) {
    set_pointers(p->desc, g);
    const float alpha = 1.0f, beta = g->c ? 1.0f : 0.0f;
    size_t ws_bytes;
    void *ws = gpu_workspace(&ws_bytes);
    cudaStream_t stream = 0;
    if (where) {
        // Every plan's algorithm was chosen for gpu_workspace's size: a smaller workspace
        // could be too small for it.
        if (where->workspace_bytes < ws_bytes)
            DIE("gemm_run_on: a workspace of %zu bytes, less than the %zu every plan may use", where->workspace_bytes,
                ws_bytes);
        ws = where->workspace, ws_bytes = where->workspace_bytes, stream = where->stream;
    }
    CUBLAS_CHECK(cublasLtMatmul((cublasLtHandle_t)gpu_cublaslt_handle(), p->desc, &alpha, g->a, p->a, g->b,
                                p->b, &beta, g->c ? g->c : g->d, p->c, g->d, p->d, algo, ws, ws_bytes, stream));
}

void gemm_run(const Gemm *g) { gemm_run_on(g, NULL); }

void gemm_run_on(const Gemm *g, const GemmStream *where) {
    Plan *p = find_plan(g, where);
    run_plan(p, g, &p->algo, where);
}

void gemm_stream_init(GemmStream *s, int high_priority) {
    // In CUDA's numbering a lower number is a higher priority; "least" is the default
    // stream's (normal) priority.
    int least = 0, greatest = 0;
    CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    CUDA_CHECK(cudaStreamCreateWithPriority(&s->stream, cudaStreamNonBlocking, high_priority ? greatest : least));
    gpu_workspace(&s->workspace_bytes);
    s->workspace = dev_alloc(s->workspace_bytes);
}

void gemm_stream_free(GemmStream *s) {
    if (!s->stream) return;
    CUDA_CHECK(cudaStreamSynchronize(s->stream));
    CUDA_CHECK(cudaStreamDestroy(s->stream));
    dev_free(s->workspace);
    s->stream = NULL, s->workspace = NULL, s->workspace_bytes = 0;
}

void gemm_clear_plans(void) {
    for (int i = 0; i < num_plans; i++) {
        cublasLtMatmulDescDestroy(plans[i].desc);
        cublasLtMatrixLayoutDestroy(plans[i].a);
        cublasLtMatrixLayoutDestroy(plans[i].b);
        cublasLtMatrixLayoutDestroy(plans[i].c);
        cublasLtMatrixLayoutDestroy(plans[i].d);
    }
    num_plans = 0;
    cache_hits = 0;
}
