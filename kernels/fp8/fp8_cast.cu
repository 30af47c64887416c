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

// 64 x 64 tiles through shared memory, 256 threads. Every global access moves 4 elements:
// 4 input values (8 bytes), 4 FP8 codes (one 32-bit store) along the rows of `out`, and 4
// codes gathered down a column of the tile for each 32-bit store of `out_t`: byte-wide
// stores would waste most of each memory transaction. rows and cols must be multiples of 4.
template <typename T>
__global__ void __launch_bounds__(256) cast_transpose_kernel(const T *x, uint8_t *out, uint8_t *out_t, int64_t rows,
                                                             int64_t cols, const float *scale, float *amax,
                                                             Fp8Format f) {
    __shared__ uint8_t tile[64][64 + 4];
    const float s = *scale;
    const int64_t r0 = (int64_t)blockIdx.y * 64, c0 = (int64_t)blockIdx.x * 64;
    float local = 0.0f;
    for (int q = threadIdx.x; q < 64 * 16; q += 256) {  // 16 quads per tile row
        const int r = q / 16, c = (q % 16) * 4;
        const int64_t gr = r0 + r, gc = c0 + c;
        uint32_t packed = 0;
        if (gr < rows && gc < cols) {
            struct alignas(8) Quad { T v[4]; } in = *reinterpret_cast<const Quad *>(x + gr * cols + gc);
#pragma unroll
            for (int j = 0; j < 4; j++) {
                float v = to_float(in.v[j]);
                local = fmaxf(local, fabsf(v));
                uint8_t code = to_fp8(v * s, f);
                tile[r][c + j] = code;
                packed |= (uint32_t)code << (8 * j);
            }
            if (out) *reinterpret_cast<uint32_t *>(out + gr * cols + gc) = packed;
        }
    }
    __syncthreads();
    if (out_t) {
        for (int q = threadIdx.x; q < 64 * 16; q += 256) {  // out_t row = a column of x
            const int c = q / 16, r = (q % 16) * 4;
            const int64_t gc = c0 + c, gr = r0 + r;
            if (gc < cols && gr < rows) {
                uint32_t packed = (uint32_t)tile[r][c] | (uint32_t)tile[r + 1][c] << 8 |
                                  (uint32_t)tile[r + 2][c] << 16 | (uint32_t)tile[r + 3][c] << 24;
                *reinterpret_cast<uint32_t *>(out_t + gc * rows + gr) = packed;
            }
        }
    }
    local = warp_max(local);
    if (threadIdx.x % 32 == 0 && amax) atomic_max_nonneg(amax, local);
}

extern "C" void fp8_cast_transpose(const void *x, uint8_t *out, uint8_t *out_t, int64_t rows, int64_t cols,
                                   const float *scale, float *amax, Fp8Format format, DType dtype) {
    if (rows % 4 || cols % 4) DIE("fp8_cast_transpose: %lld x %lld is not a multiple of 4", (long long)rows, (long long)cols);
    dim3 grid(ceil_div(cols, 64), ceil_div(rows, 64));
    DISPATCH_DTYPE(dtype, T,
                   cast_transpose_kernel<T><<<grid, 256>>>((const T *)x, out, out_t, rows, cols, scale, amax, format));
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
