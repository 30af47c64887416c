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
// cuBLASLt describes one product, D = alpha op(A) op(B) + beta C, with objects you create, set
// and destroy (cublasLt.h; the cuBLAS documentation's "cuBLASLt API" has each call). In order:
//   1. a matmul descriptor (cublasLtMatmulDesc_t): fp32 compute, and as its attributes which
//      operand is transposed, the epilogue that adds the bias, and where the bias is;
//   2. a matrix layout (cublasLtMatrixLayout_t) for each of A, B and D: element type, rows,
//      columns, leading dimension - column-major, while our tensors are row-major;
//   3. a preference (cublasLtMatmulPreference_t) saying how much workspace an algorithm may use,
//      and the heuristic's algorithm for these descriptors (it may find none: then return
//      CUBLAS_STATUS_NOT_SUPPORTED);
//   4. the product itself, cublasLtMatmul, with alpha = 1 and beta = 0;
//   5. then destroy what you created.
// Which of x and W is A and which is B, which one is transposed, each layout's shape and what
// the attributes take: chapter 02, "Linear" (modules/gemm.c makes the same calls).
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
