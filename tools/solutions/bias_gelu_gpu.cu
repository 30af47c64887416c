// Fused bias + GELU, one thread per element: the reference solution of the exercise
// "bias_gelu_gpu" (chapter 03). The contract: exercises/gpu_exercises.h.
//
// Unfused, bias and GELU are two kernels, each reading and writing the whole tensor; fused,
// x is read once and pre and y written once - what cuBLASLt's GELU_AUX_BIAS epilogue does
// while the GEMM's output tile is still in registers, which step 03 uses instead.
// Consecutive threads take consecutive elements, so a warp's loads and stores are contiguous.
// kernels/fused/elementwise.cu shows the faster layout: 8 or 16 elements per thread with
// 16-byte loads.
#include <cuda_fp16.h>

#include "exercises/gpu_exercises.h"

static const int THREADS = 256;

// GELU, tanh approximation (PyTorch's approximate="tanh"), in fp32.
static __device__ float gelu_tanh(float z) {
    const float sqrt_2_over_pi = 0.7978845608028654f, cubic = 0.044715f;
    return 0.5f * z * (1.0f + tanhf(sqrt_2_over_pi * (z + cubic * z * z * z)));
}

static __global__ void bias_gelu_kernel(const __half *x, const __half *bias, __half *pre, __half *y, int64_t n,
                                        int cols) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;  // the last block's threads past the end
    const float z = __half2float(x[i]) + __half2float(bias[i % cols]);  // row-major: the column is i % cols
    pre[i] = __float2half_rn(z);
    y[i] = __float2half_rn(gelu_tanh(z));
}

extern "C" void ex_bias_gelu(const fp16_t *x, const fp16_t *bias, fp16_t *pre, fp16_t *y, int rows, int cols) {
    const int64_t n = (int64_t)rows * cols;
    const unsigned blocks = (unsigned)((n + THREADS - 1) / THREADS);  // rounded up: every element
    bias_gelu_kernel<<<blocks, THREADS>>>(x, bias, pre, y, n, cols);
}
