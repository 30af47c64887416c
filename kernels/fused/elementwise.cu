#include "common/philox.h"
#include "kernels/device_utils.cuh"
#include "kernels/fused/elementwise.h"

// The keep flags of elements [i, i + 8), i a multiple of 8: half of one Philox call's 16 bytes.
__device__ __forceinline__ void dropout_keep8(uint64_t seed, uint64_t offset, uint64_t i, float p,
                                              bool keep[8]) {
    const Philox4 r = dropout_random_bytes(seed, offset, i);
    const int first = (int)(i & 15);  // 0 or 8
    const uint32_t threshold = dropout_threshold(p);
    for (int j = 0; j < 8; j++) keep[j] = dropout_byte(r, first + j) >= threshold;
}

template <typename T>
__global__ void bias_dropout_add_kernel(const T *x, const T *bias, const T *residual, T *out,
                                        int64_t n, int cols, float p, uint64_t seed, uint64_t offset) {
    const float scale = dropout_keep_scale(p);
    for (int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * 8; i < n;
         i += (int64_t)gridDim.x * blockDim.x * 8) {
        Pack8<T> xv = *reinterpret_cast<const Pack8<T> *>(x + i);
        Pack8<T> rv = *reinterpret_cast<const Pack8<T> *>(residual + i);
        Pack8<T> bv;
        if (bias) bv = *reinterpret_cast<const Pack8<T> *>(bias + i % cols);  // cols % 8 == 0
        bool keep[8];
        if (p > 0.0f) dropout_keep8(seed, offset, (uint64_t)i, p, keep);
        Pack8<T> o;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            float z = to_float(xv.v[j]) + (bias ? to_float(bv.v[j]) : 0.0f);
            if (p > 0.0f) z = keep[j] ? z * scale : 0.0f;
            o.v[j] = from_float<T>(to_float(rv.v[j]) + z);
        }
        *reinterpret_cast<Pack8<T> *>(out + i) = o;
    }
}

template <typename T>
__global__ void add_dropout_backward_kernel(const T *a, const T *b, T *grad_sum, T *grad_z,
                                            int64_t n, float p, uint64_t seed, uint64_t offset) {
    const float scale = dropout_keep_scale(p);
    for (int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * 8; i < n;
         i += (int64_t)gridDim.x * blockDim.x * 8) {
        Pack8<T> av = *reinterpret_cast<const Pack8<T> *>(a + i);
        Pack8<T> bv;
        if (b) bv = *reinterpret_cast<const Pack8<T> *>(b + i);
        bool keep[8];
        if (p > 0.0f) dropout_keep8(seed, offset, (uint64_t)i, p, keep);
        Pack8<T> s, z;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            // Round the sum to T first: the residual path stores it in T, and the reference
            // sees the same value on both paths.
            T sum = from_float<T>(to_float(av.v[j]) + (b ? to_float(bv.v[j]) : 0.0f));
            s.v[j] = sum;
            float g = to_float(sum);
            if (p > 0.0f) g = keep[j] ? g * scale : 0.0f;
            z.v[j] = from_float<T>(g);
        }
        if (grad_sum) *reinterpret_cast<Pack8<T> *>(grad_sum + i) = s;
        *reinterpret_cast<Pack8<T> *>(grad_z + i) = z;
    }
}

template <typename T>
__global__ void add_inplace_kernel(T *a, const T *b, int64_t n) {
    for (int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * 8; i < n;
         i += (int64_t)gridDim.x * blockDim.x * 8) {
        Pack8<T> av = *reinterpret_cast<const Pack8<T> *>(a + i);
        Pack8<T> bv = *reinterpret_cast<const Pack8<T> *>(b + i);
#pragma unroll
        for (int j = 0; j < 8; j++) av.v[j] = from_float<T>(to_float(av.v[j]) + to_float(bv.v[j]));
        *reinterpret_cast<Pack8<T> *>(a + i) = av;
    }
}

// Enough blocks to fill the GPU several times over; the kernels stride over the rest.
static unsigned int grid_for(int64_t n) {
    int64_t blocks = (n / 8 + 255) / 256;
    return (unsigned int)(blocks < 132 * 16 ? (blocks > 0 ? blocks : 1) : 132 * 16);
}

static void require_multiple_of_8(int64_t n, const char *what) {
    if (n % 8) DIE("%s: %lld elements is not a multiple of 8", what, (long long)n);
}

extern "C" void bias_dropout_add_forward(const void *x, const void *bias, const void *residual,
                                         void *out, int64_t rows, int cols, float p, uint64_t seed,
                                         uint64_t offset, DType dtype) {
    int64_t n = rows * cols;
    require_multiple_of_8(cols, "bias_dropout_add_forward");
    DISPATCH_DTYPE(dtype, T,
                   bias_dropout_add_kernel<T><<<grid_for(n), 256>>>(
                       (const T *)x, (const T *)bias, (const T *)residual, (T *)out, n, cols, p,
                       seed, offset));
    CHECK_LAUNCH();
}

extern "C" void add_dropout_backward(const void *a, const void *b, void *grad_sum, void *grad_z,
                                     int64_t n, float p, uint64_t seed, uint64_t offset,
                                     DType dtype) {
    require_multiple_of_8(n, "add_dropout_backward");
    DISPATCH_DTYPE(dtype, T,
                   add_dropout_backward_kernel<T><<<grid_for(n), 256>>>(
                       (const T *)a, (const T *)b, (T *)grad_sum, (T *)grad_z, n, p, seed, offset));
    CHECK_LAUNCH();
}

extern "C" void add_inplace(void *a, const void *b, int64_t n, DType dtype) {
    require_multiple_of_8(n, "add_inplace");
    DISPATCH_DTYPE(dtype, T, add_inplace_kernel<T><<<grid_for(n), 256>>>((T *)a, (const T *)b, n));
    CHECK_LAUNCH();
}

// ---- GELU on strided views ---------------------------------------------------------------
// One thread per 8 columns of a row (cols % 8 == 0, rows 16-byte aligned).
template <typename T>
__global__ void gelu_strided_kernel(const T *dy, int64_t dy_row, const T *x, int64_t x_row, T *out,
                                    int64_t out_row, int64_t rows, int cols) {
    const int packs = cols / 8;
    for (int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; p < rows * packs;
         p += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = p / packs;
        int c = (int)(p % packs) * 8;
        Pack8<T> xv = *reinterpret_cast<const Pack8<T> *>(x + r * x_row + c), o;
        if (dy) {  // backward
            Pack8<T> g = *reinterpret_cast<const Pack8<T> *>(dy + r * dy_row + c);
#pragma unroll
            for (int j = 0; j < 8; j++) o.v[j] = from_float<T>(to_float(g.v[j]) * gelu_tanh_grad(to_float(xv.v[j])));
        } else {
#pragma unroll
            for (int j = 0; j < 8; j++) o.v[j] = from_float<T>(gelu_tanh(to_float(xv.v[j])));
        }
        *reinterpret_cast<Pack8<T> *>(out + r * out_row + c) = o;
    }
}

extern "C" void gelu_forward_strided(const void *x, int64_t x_row, void *y, int64_t y_row, int64_t rows, int cols,
                                     DType dtype) {
    require_multiple_of_8(cols, "gelu_forward_strided");
    DISPATCH_DTYPE(dtype, T,
                   gelu_strided_kernel<T><<<grid_for(rows * cols), 256>>>(NULL, 0, (const T *)x, x_row, (T *)y,
                                                                          y_row, rows, cols));
    CHECK_LAUNCH();
}

extern "C" void gelu_backward_strided(const void *dy, int64_t dy_row, const void *x, int64_t x_row, void *dx,
                                      int64_t dx_row, int64_t rows, int cols, DType dtype) {
    require_multiple_of_8(cols, "gelu_backward_strided");
    DISPATCH_DTYPE(dtype, T,
                   gelu_strided_kernel<T><<<grid_for(rows * cols), 256>>>((const T *)dy, dy_row, (const T *)x,
                                                                          x_row, (T *)dx, dx_row, rows, cols));
    CHECK_LAUNCH();
}
