// EXERCISE "bias_gelu_gpu" (GPU, chapter 03; graded by tests/exercises/bias_gelu_gpu_test.c:
// tools/grade.sh bias_gelu_gpu, on a machine with an NVIDIA GPU).
//
// Write a fused bias + GELU kernel: what step 03's FC1 GEMM does in its epilogue, as one pass
// over the tensor instead of two (chapter 03, "What is fused"). The contract is in
// exercises/gpu_exercises.h (ex_bias_gelu):
//   pre[r, c] = x[r, c] + bias[c]          written too: GELU's backward needs GELU's input
//   y[r, c]   = GELU(x[r, c] + bias[c]),   GELU(z) = 0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3)))
// in fp32, stored in fp16; [rows, cols] row-major, bias [cols].
//
// A plan: one thread per element. With n = rows * cols elements and a block of 256 threads,
// thread i = blockIdx.x * blockDim.x + threadIdx.x takes element i (a 64-bit index: n can pass
// 2^31 in real layers). Which column is element i in? The tests use shapes whose n is not a
// multiple of 256, and rows != cols.
// Useful: __half2float, __float2half_rn, tanhf.
//
// The test prints a speed line: your kernel's bandwidth against a device-to-device copy's, and
// the reference solution's.
#include <cuda_fp16.h>

#include "exercises/gpu_exercises.h"

static __global__ void bias_gelu_kernel(const __half *x, const __half *bias, __half *pre, __half *y, int64_t n,
                                        int cols) {
    // TODO: your code here.
}

extern "C" void ex_bias_gelu(const fp16_t *x, const fp16_t *bias, fp16_t *pre, fp16_t *y, int rows, int cols) {
    const int64_t n = (int64_t)rows * cols;
    // TODO: choose the grid and the block (this launch runs one thread).
    bias_gelu_kernel<<<1, 1>>>(x, bias, pre, y, n, cols);
}
