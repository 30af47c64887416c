// LayerNorm forward, one warp per row: the reference solution of the exercise
// "layernorm_forward_gpu" (chapter 02). The contract: exercises/gpu_exercises.h.
//
// Why one warp per row: a row's statistics are sums over the row, and a warp can add up 32
// partial sums with five register-to-register shuffles - no shared memory, no __syncthreads.
// Each lane walks the row with a stride of 32, so at every step the warp reads 32 neighbouring
// values (64 contiguous bytes): coalesced.
//
// Three passes over the row: the mean, then the variance as the mean of (x - mean)^2 (not
// E[x^2] - mean^2, which cancels catastrophically when |mean| >> the spread), then the output.
// Only the first pass reads device memory; the row (a few KB) is still in L1/L2 for the others.
// kernels/layernorm/fast_layernorm.cu is the fast version: 16-byte loads, the row kept in
// registers between the passes.
#include <cuda_fp16.h>

#include "exercises/gpu_exercises.h"

static const int WARPS_PER_BLOCK = 8;  // 8 rows per block of 256 threads

// The sum of x over the 32 lanes of a warp, in every lane (butterfly: after step k each lane
// holds the sum of a group of 2^(k+1) lanes).
static __device__ float warp_sum(float x) {
    for (int offset = 16; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
    return x;
}

static __global__ void layernorm_forward_kernel(const __half *x, const __half *gamma, const __half *beta, __half *y,
                                                float *mean, float *rstd, int rows, int cols, float eps) {
    const int lane = threadIdx.x % 32;
    const int row = blockIdx.x * WARPS_PER_BLOCK + threadIdx.x / 32;
    if (row >= rows) return;  // the whole warp leaves together: nothing below waits for it
    const __half *xr = x + (size_t)row * cols;
    __half *yr = y + (size_t)row * cols;

    float sum = 0.0f;
    for (int c = lane; c < cols; c += 32) sum += __half2float(xr[c]);
    const float mu = warp_sum(sum) / cols;

    float squares = 0.0f;
    for (int c = lane; c < cols; c += 32) {
        const float d = __half2float(xr[c]) - mu;
        squares += d * d;
    }
    const float rs = rsqrtf(warp_sum(squares) / cols + eps);

    for (int c = lane; c < cols; c += 32) {
        const float xhat = (__half2float(xr[c]) - mu) * rs;
        yr[c] = __float2half_rn(xhat * __half2float(gamma[c]) + __half2float(beta[c]));
    }
    if (lane == 0) {
        mean[row] = mu;
        rstd[row] = rs;
    }
}

extern "C" void ex_layernorm_forward(const fp16_t *x, const fp16_t *gamma, const fp16_t *beta, fp16_t *y,
                                     float *mean, float *rstd, int rows, int cols, float eps) {
    const int blocks = (rows + WARPS_PER_BLOCK - 1) / WARPS_PER_BLOCK;  // rounded up: the last rows too
    layernorm_forward_kernel<<<blocks, 32 * WARPS_PER_BLOCK>>>(x, gamma, beta, y, mean, rstd, rows, cols, eps);
}
