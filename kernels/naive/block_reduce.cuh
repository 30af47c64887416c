// Reductions over a whole thread block, for the row-wise kernels (LayerNorm, softmax): one
// block per row, every thread holds a partial result, all threads get the total.
#ifndef KERNELS_NAIVE_BLOCK_REDUCE_CUH
#define KERNELS_NAIVE_BLOCK_REDUCE_CUH

#include "kernels/device_utils.cuh"

// Each warp reduces its 32 values with shuffles, warp 0 reduces the (at most 32) warp
// results, and shared memory hands the total to everyone. The first __syncthreads makes
// calling it twice in a row safe: nobody overwrites `partial` while another thread may
// still be reading `total` from the previous call.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float partial[32];
    __shared__ float total;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = (blockDim.x + 31) / 32;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float s = warp_sum(lane < warps ? partial[lane] : 0.0f);
        if (lane == 0) total = s;
    }
    __syncthreads();
    return total;
}

__device__ __forceinline__ float block_max(float v) {
    __shared__ float partial[32];
    __shared__ float total;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = (blockDim.x + 31) / 32;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float m = warp_max(lane < warps ? partial[lane] : -INFINITY);
        if (lane == 0) total = m;
    }
    __syncthreads();
    return total;
}

#endif  // KERNELS_NAIVE_BLOCK_REDUCE_CUH
