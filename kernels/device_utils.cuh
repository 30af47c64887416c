// Small device helpers shared by the kernels: storage types, conversions, dispatch on DType,
// warp reductions.
#ifndef KERNELS_DEVICE_UTILS_CUH
#define KERNELS_DEVICE_UTILS_CUH

#include <stdint.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "common/gpu/cuda_check.h"
#include "common/core/layer.h"

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

// GELU, tanh approximation, and its derivative (one definition for every kernel):
//   gelu(x) = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
//   gelu'(x) = 0.5 (1 + tanh(u)) + 0.5 x (1 - tanh(u)^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
__device__ __forceinline__ float gelu_tanh(float x) {
    const float k = 0.7978845608028654f, c = 0.044715f;
    return 0.5f * x * (1.0f + tanhf(k * (x + c * x * x * x)));
}

__device__ __forceinline__ float gelu_tanh_grad(float x) {
    const float k = 0.7978845608028654f, c = 0.044715f;
    float t = tanhf(k * (x + c * x * x * x));
    return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * k * (1.0f + 3.0f * c * x * x);
}

// Eight 16-bit values: one 16-byte load or store.
template <typename T>
struct alignas(16) Pack8 {
    T v[8];
};

__device__ __forceinline__ float warp_sum(float x) {
    for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
    return x;
}

__device__ __forceinline__ float warp_max(float x) {
    for (int offset = 16; offset > 0; offset >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
    return x;
}

static inline unsigned int ceil_div(long long a, long long b) { return (unsigned int)((a + b - 1) / b); }

// Whether ptr is 16-byte aligned (what 16-byte vector loads and TMA copies need).
static inline bool aligned16(const void *ptr) { return ((uintptr_t)ptr & 15) == 0; }

#endif  // KERNELS_DEVICE_UTILS_CUH
