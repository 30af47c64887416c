#include <cuda_fp8.h>

#include "kernels/device_utils.cuh"
#include "kernels/fp8/fp8_cast.h"

__device__ __forceinline__ uint8_t to_fp8(float x, Fp8Format f) {
    return (uint8_t)__nv_cvt_float_to_fp8(x, __NV_SATFINITE, f == FP8_E4M3 ? __NV_E4M3 : __NV_E5M2);
}

__global__ void encode_kernel(const float *x, uint8_t *out, int64_t n, Fp8Format f) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = to_fp8(x[i], f);
}

extern "C" void fp8_encode_device(const float *x, uint8_t *out, int64_t n, Fp8Format format) {
    encode_kernel<<<ceil_div(n, 256), 256>>>(x, out, n, format);
    CHECK_LAUNCH();
}

// |x| is non-negative, so comparing floats as signed ints orders them: atomicMax on ints.
__device__ __forceinline__ void atomic_max_nonneg(float *addr, float v) {
    atomicMax(reinterpret_cast<int *>(addr), __float_as_int(v));
}

template <typename T>
__global__ void cast_amax_kernel(const T *x, uint8_t *out, int64_t n, const float *scale, float *amax, Fp8Format f) {
    const float s = *scale;
    float local = 0.0f;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float v = to_float(x[i]);
        local = fmaxf(local, fabsf(v));
        out[i] = to_fp8(v * s, f);
    }
    local = warp_max(local);
    if (threadIdx.x % 32 == 0) atomic_max_nonneg(amax, local);
}

extern "C" void fp8_cast_amax(const void *x, uint8_t *out, int64_t n, const float *scale, float *amax,
                              Fp8Format format, DType dtype) {
    unsigned int blocks = ceil_div(n, 256);
    if (blocks > 132 * 8) blocks = 132 * 8;
    DISPATCH_DTYPE(dtype, T,
                   cast_amax_kernel<T><<<blocks, 256>>>((const T *)x, out, n, scale, amax, format));
    CHECK_LAUNCH();
}
