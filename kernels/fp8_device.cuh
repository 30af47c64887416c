// Device helpers of every kernel that writes FP8 (kernels/fp8's casts, the LayerNorm that
// writes its output in FP8): CUDA's own conversion, and the amax a cast records.
#ifndef KERNELS_FP8_DEVICE_CUH
#define KERNELS_FP8_DEVICE_CUH

#include <cuda_fp8.h>
#include <stdint.h>

#include "common/fp8/fp8_format.h"

// x to an FP8 code: round to nearest even, saturating (what common/fp8/fp8_format.h's encoder matches).
__device__ __forceinline__ uint32_t to_fp8(float x, Fp8Format f) {
    return (uint32_t)__nv_cvt_float_to_fp8(x, __NV_SATFINITE, f == FP8_E4M3 ? __NV_E4M3 : __NV_E5M2);
}

// Four consecutive codes as one word, the first in the lowest byte (memory order).
__device__ __forceinline__ uint32_t pack_fp8x4(const uint32_t *code) {
    return code[0] | code[1] << 8 | code[2] << 16 | code[3] << 24;
}

// *addr = max(*addr, v) for v >= 0: non-negative floats order like their bit patterns as
// signed ints, so an integer atomicMax does it.
__device__ __forceinline__ void atomic_max_nonneg(float *addr, float v) {
    atomicMax(reinterpret_cast<int *>(addr), __float_as_int(v));
}

#endif  // KERNELS_FP8_DEVICE_CUH
