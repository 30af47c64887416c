// Error checks for the CUDA runtime, cuBLAS and cuBLASLt that say file, line, the call
// and the library's own message, then exit with status 1.
//
//   CUDA_CHECK(cudaMalloc(&p, n));
//   CUBLAS_CHECK(cublasLtMatmul(...));    cuBLAS and cuBLASLt share cublasStatus_t
//   my_kernel<<<grid, block>>>(...); CHECK_LAUNCH();
#ifndef COMMON_GPU_CUDA_CHECK_H
#define COMMON_GPU_CUDA_CHECK_H

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "common/core/errors.h"

#define CUDA_CHECK(call)                                                                  \
    do {                                                                                  \
        cudaError_t err_ = (call);                                                        \
        if (err_ != cudaSuccess)                                                          \
            die_at(__FILE__, __LINE__, "CUDA error %s: %s, in %s", cudaGetErrorName(err_), \
                   cudaGetErrorString(err_), #call);                                      \
    } while (0)

#define CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

#define CUBLAS_CHECK(call)                                                                \
    do {                                                                                  \
        cublasStatus_t st_ = (call);                                                      \
        if (st_ != CUBLAS_STATUS_SUCCESS)                                                 \
            die_at(__FILE__, __LINE__, "cuBLAS error %s: %s, in %s", cublasGetStatusName(st_), \
                   cublasGetStatusString(st_), #call);                                    \
    } while (0)

#endif  // COMMON_GPU_CUDA_CHECK_H
