#include "common/modules/gemm.h"

#include <string.h>

#include "common/cuda_check.h"
#include "common/gpu.h"

// What identifies a plan: everything cuBLASLt's heuristic looks at except the pointers'
// values (all our device pointers are 256-byte aligned).
typedef struct {
    int trans_a, trans_b, has_c, epilogue, dtype;
    int64_t m, n, k, lda, ldb, ldd, aux_ld;
} PlanKey;

typedef struct {
    PlanKey key;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, c, d;
    cublasLtMatmulAlgo_t algo;
} Plan;

enum { MAX_PLANS = 128 };
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
        case GEMM_EPILOGUE_BGRADB: return CUBLASLT_EPILOGUE_BGRADB;
        default: return CUBLASLT_EPILOGUE_DEFAULT;
    }
}

static void set_pointers(cublasLtMatmulDesc_t desc, const Gemm *g) {
    if (g->epilogue != GEMM_EPILOGUE_NONE)
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g->bias,
                                                    sizeof g->bias));
    if (g->epilogue == GEMM_EPILOGUE_GELU_AUX_BIAS || g->epilogue == GEMM_EPILOGUE_DGELU_BGRAD)
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER,
                                                    &g->aux, sizeof g->aux));
}

static Plan *make_plan(const PlanKey *key, const Gemm *g) {
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
    if (g->epilogue == GEMM_EPILOGUE_GELU_AUX_BIAS || g->epilogue == GEMM_EPILOGUE_DGELU_BGRAD)
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD,
                                                    &g->aux_ld, sizeof g->aux_ld));
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
    cublasLtMatmulHeuristicResult_t result;
    int found = 0;
    CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic((cublasLtHandle_t)gpu_cublaslt_handle(), p->desc, p->a,
                                                p->b, p->c, p->d, pref, 1, &result, &found));
    cublasLtMatmulPreferenceDestroy(pref);
    if (!found)
        DIE("cuBLASLt has no algorithm for m=%lld n=%lld k=%lld (trans %d%d, epilogue %d)",
            (long long)g->m, (long long)g->n, (long long)g->k, g->trans_a, g->trans_b, g->epilogue);
    p->algo = result.algo;
    num_plans++;
    return p;
}

static Plan *find_plan(const Gemm *g) {
    PlanKey key;
    memset(&key, 0, sizeof key);  // padding too: keys are compared with memcmp
    key.trans_a = g->trans_a, key.trans_b = g->trans_b, key.has_c = g->c != NULL;
    key.epilogue = g->epilogue, key.dtype = g->dtype;
    key.m = g->m, key.n = g->n, key.k = g->k;
    key.lda = g->lda, key.ldb = g->ldb, key.ldd = g->ldd, key.aux_ld = g->aux_ld;
    for (int i = 0; i < num_plans; i++) {
        if (!memcmp(&plans[i].key, &key, sizeof key)) {
            cache_hits++;
            return &plans[i];
        }
    }
    return make_plan(&key, g);
}

void gemm_run(const Gemm *g) {
    Plan *p = find_plan(g);
    set_pointers(p->desc, g);
    const float alpha = 1.0f, beta = g->c ? 1.0f : 0.0f;
    size_t ws_bytes;
    void *ws = gpu_workspace(&ws_bytes);
    CUBLAS_CHECK(cublasLtMatmul((cublasLtHandle_t)gpu_cublaslt_handle(), p->desc, &alpha, g->a, p->a, g->b,
                                p->b, &beta, g->c ? g->c : g->d, p->c, g->d, p->d, &p->algo, ws, ws_bytes, 0));
}
