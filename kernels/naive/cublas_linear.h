// A Linear layer's three matrix products on cuBLAS (cublasGemmEx, fp32 accumulation), in
// row-major terms. With X [M, K] the input (M = tokens), W [N, K] the weight (PyTorch layout):
//   forward         Y  = X W^T      [M, N]
//   input gradient  dX = dY W       [M, K]
//   weight gradient dW = dY^T X     [N, K]
// cuBLAS is column-major: a row-major matrix is its transpose in column-major, so each
// product is issued transposed (C^T = B^T A^T): see cublas_linear.c.
#ifndef KERNELS_NAIVE_CUBLAS_LINEAR_H
#define KERNELS_NAIVE_CUBLAS_LINEAR_H

#include <stdint.h>

#include "common/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

void cublas_linear_forward(const void *x, const void *w, void *y, int64_t m, int k, int n, DType dtype);
void cublas_linear_backward_input(const void *dy, const void *w, void *dx, int64_t m, int k, int n,
                                  DType dtype);
void cublas_linear_backward_weight(const void *dy, const void *x, void *dw, int64_t m, int k, int n,
                                   DType dtype);

#ifdef __cplusplus
}
#endif

#endif  // KERNELS_NAIVE_CUBLAS_LINEAR_H
