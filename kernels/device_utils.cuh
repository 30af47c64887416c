// Small device helpers shared by the kernels: storage types, conversions, dispatch on DType,
// warp reductions.
#ifndef KERNELS_DEVICE_UTILS_CUH
#define KERNELS_DEVICE_UTILS_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "common/cuda_check.h"
#include "common/layer.h"

// Conversions between float and the 16-bit storage types, by overloading.
__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

// Calls body with `T` bound to the storage type of `dtype`:
//   DISPATCH_DTYPE(cfg->dtype, T, my_kernel<T><<<g, b>>>(...));
#define DISPATCH_DTYPE(dtype, T, ...)                \
    do {                                             \
        if ((dtype) == DTYPE_BF16) {                 \
            typedef __nv_bfloat16 T;                 \
            __VA_ARGS__;                             \
        } else {                                     \
            typedef __half T;                        \
            __VA_ARGS__;                             \
        }                                            \
    } while (0)

__device__ __forceinline__ float warp_sum(float x) {
    for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
    return x;
}

__device__ __forceinline__ float warp_max(float x) {
    for (int offset = 16; offset > 0; offset >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
    return x;
}

static inline unsigned int ceil_div(long long a, long long b) { return (unsigned int)((a + b - 1) / b); }

#endif  // KERNELS_DEVICE_UTILS_CUH
