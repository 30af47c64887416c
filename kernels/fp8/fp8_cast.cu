#include <cuda_fp8.h>
#include <float.h>

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

// 32 x 32 tiles through shared memory: reads along rows and writes along columns both stay
// coalesced. Each block is 32 x 8 threads, each thread 4 rows of the tile.
template <typename T>
__global__ void cast_transpose_kernel(const T *x, uint8_t *out, uint8_t *out_t, int64_t rows, int64_t cols,
                                      const float *scale, float *amax, Fp8Format f) {
    __shared__ uint8_t tile[32][33];
    const float s = *scale;
    const int64_t r0 = (int64_t)blockIdx.y * 32, c0 = (int64_t)blockIdx.x * 32;
    float local = 0.0f;
    for (int k = threadIdx.y; k < 32; k += 8) {
        int64_t r = r0 + k, c = c0 + threadIdx.x;
        uint8_t code = 0;
        if (r < rows && c < cols) {
            float v = to_float(x[r * cols + c]);
            local = fmaxf(local, fabsf(v));
            code = to_fp8(v * s, f);
            if (out) out[r * cols + c] = code;
        }
        tile[k][threadIdx.x] = code;
    }
    __syncthreads();
    if (out_t)
        for (int k = threadIdx.y; k < 32; k += 8) {
            int64_t c = c0 + k, r = r0 + threadIdx.x;  // out_t[c][r] = tile[r][c]
            if (r < rows && c < cols) out_t[c * rows + r] = tile[threadIdx.x][k];
        }
    local = warp_max(local);
    if (threadIdx.x == 0 && amax) atomic_max_nonneg(amax, local);
}

extern "C" void fp8_cast_transpose(const void *x, uint8_t *out, uint8_t *out_t, int64_t rows, int64_t cols,
                                   const float *scale, float *amax, Fp8Format format, DType dtype) {
    dim3 grid(ceil_div(cols, 32), ceil_div(rows, 32)), block(32, 8);
    DISPATCH_DTYPE(dtype, T,
                   cast_transpose_kernel<T><<<grid, block>>>((const T *)x, out, out_t, rows, cols, scale, amax,
                                                             format));
    CHECK_LAUNCH();
}

__global__ void update_scale_kernel(float *meta, int len, float fp8_max, int margin, int most_recent) {
    float *hist = meta + FP8_META_HISTORY;
    float amax = hist[0];
    if (!most_recent)
        for (int i = 1; i < len; i++) amax = fmaxf(amax, hist[i]);
    float scale = meta[FP8_META_SCALE];
    if (amax > 0.0f && isfinite(amax)) {
        float s = (fp8_max / amax) / ldexpf(1.0f, margin);
        scale = isfinite(s) ? s : FLT_MAX;
    }
    meta[FP8_META_SCALE] = scale;
    meta[FP8_META_SCALE_INV] = 1.0f / scale;
    for (int i = len - 1; i > 0; i--) hist[i] = hist[i - 1];
    hist[0] = 0.0f;
}

extern "C" void fp8_update_scale_device(float *meta, int history_len, float fp8_max, int margin, int most_recent) {
    update_scale_kernel<<<1, 1>>>(meta, history_len, fp8_max, margin, most_recent);
    CHECK_LAUNCH();
}
