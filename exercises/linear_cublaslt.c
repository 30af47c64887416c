// EXERCISE "linear_cublaslt" (GPU, chapter 02; graded by tests/exercises/linear_cublaslt_test.c:
// tools/grade.sh linear_cublaslt, on a machine with an NVIDIA GPU).
//
// Write a Linear's forward pass with cuBLASLt, the bias added by the GEMM's epilogue - what
// modules/linear.c does through modules/gemm.c. No kernel to write: the lesson is the
// descriptors (chapter 02, "Linear"). The contract is in exercises/gpu_exercises.h
// (ex_linear_forward): y [tokens, out] = x [tokens, in] W^T + bias, W [out, in], all fp16,
// fp32 accumulation; return the status of the first call that fails (0 if none), and destroy
// whatever you created either way.
//
// The pieces, in order (cublasLt.h; the cuBLAS documentation's "cuBLASLt API" has each one):
//   1. cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F), then
//      cublasLtMatmulDescSetAttribute for CUBLASLT_MATMUL_DESC_TRANSA (or _TRANSB),
//      CUBLASLT_MATMUL_DESC_EPILOGUE (CUBLASLT_EPILOGUE_BIAS) and CUBLASLT_MATMUL_DESC_BIAS_POINTER
//      (the attribute's value is the pointer itself: pass &bias, sizeof bias);
//   2. cublasLtMatrixLayoutCreate for A, B and D: (CUDA_R_16F, rows, cols, leading dimension),
//      COLUMN-major - and our tensors are row-major (chapter 02 shows how y = x W^T maps to
//      D = op(A) op(B) with the bias added to each column of D);
//   3. a cublasLtMatmulPreference with CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, and
//      cublasLtMatmulAlgoGetHeuristic(..., 1 result, ...): found == 0 means no algorithm fits;
//   4. cublasLtMatmul(handle, op, &alpha, A, layout_a, B, layout_b, &beta, C, layout_c, D,
//      layout_d, &algo, workspace, workspace_bytes, stream 0) with alpha = 1 and beta = 0
//      (then C is not read: pass D and its layout again);
//   5. destroy the preference, the layouts and the descriptor.
// The handle and a workspace: gpu_cublaslt_handle() and gpu_workspace(&bytes) (common/gpu/gpu.h).
//
// The test prints a speed line: your Linear's FLOP rate against cuBLAS's plain GEMM of the same
// shape (no bias), and the reference solution's.
#include <cublasLt.h>

#include "common/gpu/gpu.h"
#include "exercises/gpu_exercises.h"

int ex_linear_forward(const fp16_t *x, const fp16_t *weight, const fp16_t *bias, fp16_t *y, int tokens,
                      int in_features, int out_features) {
    (void)x, (void)weight, (void)bias, (void)y, (void)tokens, (void)in_features, (void)out_features;
    return CUBLAS_STATUS_NOT_SUPPORTED;  // TODO: your code here
}
