// A Linear's forward on cuBLASLt, the bias in the epilogue: the reference solution of the
// exercise "linear_cublaslt" (chapter 02). The contract: exercises/gpu_exercises.h.
//
// cuBLASLt describes a product D = alpha op(A) op(B) + beta C with objects, not arguments:
//   - a matmul descriptor: the compute type (fp32 accumulation), which operands are transposed,
//     and the epilogue - what happens to each output tile before it is stored (here: + bias);
//   - one matrix layout per operand: its element type, rows, columns and leading dimension,
//     all COLUMN-major;
//   - a preference (how much workspace an algorithm may use), from which the heuristic picks an
//     algorithm for exactly these descriptors.
// Our tensors are row-major, and a row-major [r, c] matrix is the column-major [c, r] one, its
// transpose. So y [tokens, out] = x W^T (row-major) is, column-major, y^T [out, tokens] = W x^T:
//   A = W  stored column-major as [in, out] (ld in); op(A) = A^T is [out, in]    -> TRANSA = T
//   B = x  stored column-major as [in, tokens] (ld in); op(B) = B              -> TRANSB = N
//   D = y  column-major [out, tokens] (ld out); the bias [out] is added to each of its columns.
// modules/gemm.c does the same and caches the descriptors and the algorithm per shape; here
// they are made and destroyed on every call, which costs some microseconds of CPU time.
#include <cublasLt.h>

#include "common/gpu/gpu.h"
#include "exercises/gpu_exercises.h"

// Run one cuBLASLt call; on failure remember its status and skip to the clean-up.
#define TRY(call)                                   \
    do {                                            \
        status = (call);                            \
        if (status != CUBLAS_STATUS_SUCCESS) goto done; \
    } while (0)

int ex_linear_forward(const fp16_t *x, const fp16_t *weight, const fp16_t *bias, fp16_t *y, int tokens,
                      int in_features, int out_features) {
    cublasLtHandle_t lt = (cublasLtHandle_t)gpu_cublaslt_handle();
    size_t workspace_bytes;
    void *workspace = gpu_workspace(&workspace_bytes);
    cublasStatus_t status = CUBLAS_STATUS_SUCCESS;
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t a = NULL, b = NULL, d = NULL;
    cublasLtMatmulPreference_t preference = NULL;

    TRY(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));  // fp32 accumulation and alpha/beta
    const cublasOperation_t transpose = CUBLAS_OP_T;
    TRY(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof transpose));
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    TRY(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
    TRY(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));

    TRY(cublasLtMatrixLayoutCreate(&a, CUDA_R_16F, in_features, out_features, in_features));  // W
    TRY(cublasLtMatrixLayoutCreate(&b, CUDA_R_16F, in_features, tokens, in_features));        // x
    TRY(cublasLtMatrixLayoutCreate(&d, CUDA_R_16F, out_features, tokens, out_features));      // y

    TRY(cublasLtMatmulPreferenceCreate(&preference));
    TRY(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes,
                                             sizeof workspace_bytes));
    cublasLtMatmulHeuristicResult_t choice;
    int found = 0;
    TRY(cublasLtMatmulAlgoGetHeuristic(lt, op, a, b, d, d, preference, 1, &choice, &found));
    if (found == 0) {
        status = CUBLAS_STATUS_NOT_SUPPORTED;
        goto done;
    }
    const float alpha = 1.0f, beta = 0.0f;  // beta = 0: C is not read (D is passed as C)
    TRY(cublasLtMatmul(lt, op, &alpha, weight, a, x, b, &beta, y, d, y, d, &choice.algo, workspace, workspace_bytes,
                       0));
done:
    if (preference) cublasLtMatmulPreferenceDestroy(preference);
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
    return (int)status;
}
