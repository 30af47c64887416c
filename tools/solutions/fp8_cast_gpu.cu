// The FP8 cast of delayed scaling, recording amax: the reference solution of the exercise
// "fp8_cast_gpu" (chapter 05). The contract: exercises/gpu_exercises.h.
//
// Two jobs in one pass over x: each element's FP8 code, and the tensor's max |x| for the next
// steps' scale. The codes are independent (one per thread, grid-stride loop); the amax is a
// reduction over the whole tensor, done in three levels so that only one thread per block
// touches global memory:
//   1. each thread keeps the max of its own elements in a register;
//   2. a warp combines its 32 with shuffles, then one warp combines the block's warps
//      through shared memory;
//   3. one atomicMax per block into *amax. CUDA has no float atomicMax, but non-negative
//      floats compare like their bit patterns read as signed ints, so the int one does it.
// kernels/fp8/fp8_cast.cu is the fast version (8 elements per thread, 16-byte loads) and also
// writes the transposed copy that the weight gradient's FP8 GEMM needs.
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "exercises/gpu_exercises.h"

static const int THREADS = 256;
static const int MAX_BLOCKS = 1024;  // enough to fill any GPU; the grid-stride loop does the rest

static __device__ float warp_max(float v) {
    for (int offset = 16; offset > 0; offset /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

static __global__ void fp8_cast_kernel(const __half *x, uint8_t *out, int64_t n, const float *scale, float *amax,
                                       __nv_fp8_interpretation_t format) {
    const float s = *scale;
    float local_max = 0.0f;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float v = __half2float(x[i]);
        local_max = fmaxf(local_max, fabsf(v));  // amax of x itself, not of x * scale
        out[i] = __nv_cvt_float_to_fp8(v * s, __NV_SATFINITE, format);
    }
    __shared__ float warp_maxes[32];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    local_max = warp_max(local_max);
    if (lane == 0) warp_maxes[warp] = local_max;
    __syncthreads();
    if (warp == 0) {
        float block_max = lane < (int)(blockDim.x / 32) ? warp_maxes[lane] : 0.0f;
        block_max = warp_max(block_max);
        if (lane == 0) atomicMax(reinterpret_cast<int *>(amax), __float_as_int(block_max));
    }
}

extern "C" void ex_fp8_cast(const fp16_t *x, uint8_t *out, int64_t n, const float *scale, float *amax,
                            Fp8Format format) {
    int64_t blocks = (n + THREADS - 1) / THREADS;
    if (blocks > MAX_BLOCKS) blocks = MAX_BLOCKS;
    if (blocks < 1) blocks = 1;
    fp8_cast_kernel<<<(unsigned)blocks, THREADS>>>(x, out, n, scale, amax,
                                                  format == FP8_E4M3 ? __NV_E4M3 : __NV_E5M2);
}
