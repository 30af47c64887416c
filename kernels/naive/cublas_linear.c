#include "kernels/naive/cublas_linear.h"

#include "common/cuda_check.h"
#include "common/gpu.h"

static cudaDataType_t cuda_type(DType dtype) { return dtype == DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_16F; }

// C (col-major m x n, ld ldc) = op(A) op(B), fp32 accumulation.
static void gemm(cublasOperation_t op_a, cublasOperation_t op_b, int m, int n, int k, const void *a,
                 int lda, const void *b, int ldb, void *c, int ldc, DType dtype) {
    const float alpha = 1.0f, beta = 0.0f;
    cudaDataType_t t = cuda_type(dtype);
    CUBLAS_CHECK(cublasGemmEx((cublasHandle_t)gpu_cublas_handle(), op_a, op_b, m, n, k, &alpha, a, t,
                              lda, b, t, ldb, &beta, c, t, ldc, CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT));
}

// Y^T [N x M] = W [N x K] . X^T [K x M]: W is stored as col-major K x N (so op T), X as K x M.
void cublas_linear_forward(const void *x, const void *w, void *y, int64_t m, int k, int n, DType dtype) {
    gemm(CUBLAS_OP_T, CUBLAS_OP_N, n, (int)m, k, w, k, x, k, y, n, dtype);
}

// dX^T [K x M] = W^T [K x N] . dY^T [N x M]: W stored col-major K x N (op N), dY as N x M.
void cublas_linear_backward_input(const void *dy, const void *w, void *dx, int64_t m, int k, int n,
                                  DType dtype) {
    gemm(CUBLAS_OP_N, CUBLAS_OP_N, k, (int)m, n, w, k, dy, n, dx, k, dtype);
}

// dW^T [K x N] = X^T [K x M] . dY [M x N]: X stored col-major K x M (op N), dY stored N x M (op T).
void cublas_linear_backward_weight(const void *dy, const void *x, void *dw, int64_t m, int k, int n,
                                   DType dtype) {
    gemm(CUBLAS_OP_N, CUBLAS_OP_T, k, n, (int)m, x, k, dy, n, dw, k, dtype);
}
