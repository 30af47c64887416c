// EXERCISE "layernorm_forward_gpu" (GPU, chapter 02; graded by
// tests/exercises/layernorm_forward_gpu_test.c: tools/grade.sh layernorm_forward_gpu, on a machine
// with an NVIDIA GPU).
//
// Write LayerNorm's forward pass as a CUDA kernel. What to compute, and the rules every GPU
// exercise follows, are in exercises/gpu_exercises.h (ex_layernorm_forward): per row the mean,
// the biased variance, rstd = 1 / sqrt(var + eps), then y = (x - mean) * rstd * gamma + beta;
// mean and rstd saved in fp32, arithmetic in fp32, storage in fp16.
//
// A plan that works well - one warp (32 threads) per row:
//   - a block of 256 threads is 8 warps, so 8 rows; launch enough blocks for every row (rows is
//     not a multiple of 8 in the tests: round up, and let the warps past the last row return);
//   - lane l of a warp handles columns l, l + 32, l + 64, ...: at each step the 32 lanes read 32
//     neighbouring values, one coalesced 64-byte access;
//   - each lane adds up its own columns; then the warp adds the 32 partial sums with
//     __shfl_xor_sync(0xffffffff, v, offset) for offset = 16, 8, 4, 2, 1 (afterwards every lane
//     holds the total - no shared memory, no __syncthreads);
//   - the variance as the mean of (x - mean)^2 in a second pass over the row (the tests include
//     data with mean 1000 and spread 4: E[x^2] - mean^2 does not survive that in fp32);
//   - a third pass writes y; lane 0 writes mean and rstd.
// Useful: __half2float, __float2half_rn, rsqrtf; threadIdx.x / 32 is the warp, % 32 the lane.
//
// The test prints a speed line: your kernel's bandwidth against a device-to-device copy's, and
// the reference solution's. Chapter 02 says how kernels/layernorm/fast_layernorm.cu gets to 96%.
#include <cuda_fp16.h>

#include "exercises/gpu_exercises.h"

static __global__ void layernorm_forward_kernel(const __half *x, const __half *gamma, const __half *beta, __half *y,
                                                float *mean, float *rstd, int rows, int cols, float eps) {
    // TODO: your code here.
}

extern "C" void ex_layernorm_forward(const fp16_t *x, const fp16_t *gamma, const fp16_t *beta, fp16_t *y,
                                     float *mean, float *rstd, int rows, int cols, float eps) {
    // TODO: choose the grid and the block (this launch runs one thread).
    layernorm_forward_kernel<<<1, 1>>>(x, gamma, beta, y, mean, rstd, rows, cols, eps);
}
