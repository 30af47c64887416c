#include "modules/fp8_gemm.h"

#include <string.h>

#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu.h"
#include "modules/gemm.h"

typedef struct {
    int64_t m, n, k, ldd;
    int a_format, b_format, out_dtype, has_bias, fast_accum;
    int deterministic;  // planned under gemm_set_deterministic(1)
} Fp8Key;

typedef struct {
    Fp8Key key;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo;
} Fp8Plan;

enum { MAX_FP8_PLANS = 64 };
static Fp8Plan plans[MAX_FP8_PLANS];
static int num_plans;

static cudaDataType_t fp8_type(Fp8Format f) { return f == FP8_E4M3 ? CUDA_R_8F_E4M3 : CUDA_R_8F_E5M2; }

static Fp8Plan *plan_for(const Fp8Gemm *g) {
    Fp8Key key;
    memset(&key, 0, sizeof key);
    key.m = g->m, key.n = g->n, key.k = g->k, key.ldd = g->ldd;
    key.a_format = g->a_format, key.b_format = g->b_format, key.out_dtype = g->out_dtype;
    key.has_bias = g->bias != NULL, key.fast_accum = g->fast_accum;
    key.deterministic = gemm_deterministic();
    for (int i = 0; i < num_plans; i++)
        if (!memcmp(&plans[i].key, &key, sizeof key)) return &plans[i];
    if (num_plans == MAX_FP8_PLANS) DIE("too many FP8 GEMM shapes");
    if (g->a_format == FP8_E5M2 && g->b_format == FP8_E5M2) DIE("cuBLASLt has no E5M2 x E5M2 product");
    Fp8Plan *p = &plans[num_plans];
    p->key = key;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t t = CUBLAS_OP_T, n = CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof t));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &n, sizeof n));
    int8_t fast = (int8_t)g->fast_accum;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast, sizeof fast));
    if (g->bias) {
        cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
        cudaDataType_t bt = g->out_dtype == DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_16F;
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g->bias, sizeof g->bias));
    }
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &g->a_scale_inv,
                                                sizeof g->a_scale_inv));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &g->b_scale_inv,
                                                sizeof g->b_scale_inv));
    cudaDataType_t out = g->out_dtype == DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_16F;
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->a, fp8_type(g->a_format), g->k, g->m, g->k));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->b, fp8_type(g->b_format), g->k, g->n, g->k));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->c, out, g->m, g->n, g->ldd));
    cublasLtMatmulPreference_t pref;
    size_t ws_bytes;
    gpu_workspace(&ws_bytes);
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes,
                                                      sizeof ws_bytes));
    if (key.deterministic) {  // as gemm.c's products (gemm_set_deterministic)
        const uint32_t schemes = gemm_reduction_schemes();
        CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &schemes,
                                                          sizeof schemes));
    }
    cublasLtMatmulHeuristicResult_t r;
    int found = 0;
    CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic((cublasLtHandle_t)gpu_cublaslt_handle(), p->desc, p->a, p->b, p->c,
                                                p->c, pref, 1, &r, &found));
    cublasLtMatmulPreferenceDestroy(pref);
    if (!found) DIE("cuBLASLt has no FP8 algorithm for m=%lld n=%lld k=%lld", (long long)g->m, (long long)g->n, (long long)g->k);
    p->algo = r.algo;
    if (key.deterministic) gemm_require_reduction_scheme(&p->algo);
    num_plans++;
    return p;
}

void fp8_gemm_run(const Fp8Gemm *g) {
    Fp8Plan *p = plan_for(g);
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &g->a_scale_inv,
                                                sizeof g->a_scale_inv));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &g->b_scale_inv,
                                                sizeof g->b_scale_inv));
    if (g->bias)
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g->bias, sizeof g->bias));
    const float alpha = 1.0f, beta = 0.0f;
    size_t ws_bytes;
    void *ws = gpu_workspace(&ws_bytes);
    CUBLAS_CHECK(cublasLtMatmul((cublasLtHandle_t)gpu_cublaslt_handle(), p->desc, &alpha, g->a, p->a, g->b, p->b,
                                &beta, g->d, p->c, g->d, p->c, &p->algo, ws, ws_bytes, 0));
}
