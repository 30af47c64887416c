#include "common/core/philox.h"
#include "common/gpu/gpu_phase.h"
#include "kernels/device_utils.cuh"
#include "kernels/fused/elementwise.h"

// Each thread takes 16 consecutive elements [i, i + 16), i a multiple of 16: exactly one
// Philox group (common/core/philox.h), so every random byte is drawn once. (With 8 elements per
// thread, two threads drew each group and kept half of it.) Its two 16-byte halves are loaded
// before the generator runs, so the loads are in flight while it computes.
constexpr int PER_THREAD = 16;

// The keep flags of elements [i, i + 16), i a multiple of 16: one Philox call.
__device__ __forceinline__ void dropout_keep16(const PhiloxKeys &keys, uint64_t offset, int64_t i,
                                               uint32_t threshold, bool keep[PER_THREAD]) {
    const Philox4 r = philox4x32_10_keyed((uint64_t)i >> 4, offset, &keys);
#pragma unroll
    for (int j = 0; j < PER_THREAD; j++) keep[j] = dropout_byte(r, j) >= threshold;
}

template <typename T>
__global__ void bias_dropout_add_kernel(const T *x, const T *bias, const T *residual, T *out, int64_t n, int cols,
                                        float p, PhiloxKeys keys, uint64_t offset, uint64_t first) {
    const float scale = dropout_keep_scale(p);
    const uint32_t threshold = dropout_threshold(p);
    const int64_t stride = (int64_t)gridDim.x * blockDim.x * PER_THREAD;
    for (int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * PER_THREAD; i < n; i += stride) {
        const int halves = i + 8 < n ? 2 : 1;  // n is a multiple of 8, not always of 16
        Pack8<T> xv[2], rv[2], bv[2];
        // The bias columns of the two halves: cols % 8 == 0, so each half lies in one row.
        const int col0 = (int)(i % cols), col1 = col0 + 8 == cols ? 0 : col0 + 8;
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            if (hf >= halves) break;
            xv[hf] = *reinterpret_cast<const Pack8<T> *>(x + i + 8 * hf);
            rv[hf] = *reinterpret_cast<const Pack8<T> *>(residual + i + 8 * hf);
            if (bias) bv[hf] = *reinterpret_cast<const Pack8<T> *>(bias + (hf ? col1 : col0));
        }
        bool keep[PER_THREAD];
        if (p > 0.0f) dropout_keep16(keys, offset, (int64_t)first + i, threshold, keep);
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            if (hf >= halves) break;
            Pack8<T> o;
#pragma unroll
            for (int j = 0; j < 8; j++) {
                float z = to_float(xv[hf].v[j]) + (bias ? to_float(bv[hf].v[j]) : 0.0f);
                if (p > 0.0f) z = keep[8 * hf + j] ? z * scale : 0.0f;
                o.v[j] = from_float<T>(to_float(rv[hf].v[j]) + z);
            }
            *reinterpret_cast<Pack8<T> *>(out + i + 8 * hf) = o;
        }
    }
}

template <typename T>
__global__ void add_dropout_backward_kernel(const T *a, const T *b, T *grad_sum, T *grad_z, int64_t n, float p,
                                            PhiloxKeys keys, uint64_t offset, uint64_t first) {
    const float scale = dropout_keep_scale(p);
    const uint32_t threshold = dropout_threshold(p);
    const int64_t stride = (int64_t)gridDim.x * blockDim.x * PER_THREAD;
    for (int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * PER_THREAD; i < n; i += stride) {
        const int halves = i + 8 < n ? 2 : 1;
        Pack8<T> av[2], bv[2];
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            if (hf >= halves) break;
            av[hf] = *reinterpret_cast<const Pack8<T> *>(a + i + 8 * hf);
            if (b) bv[hf] = *reinterpret_cast<const Pack8<T> *>(b + i + 8 * hf);
        }
        bool keep[PER_THREAD];
        if (p > 0.0f) dropout_keep16(keys, offset, (int64_t)first + i, threshold, keep);
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            if (hf >= halves) break;
            Pack8<T> sum, z;
#pragma unroll
            for (int j = 0; j < 8; j++) {
                // Round the sum to T first: the residual path stores it in T, and the reference
                // sees the same value on both paths.
                sum.v[j] = from_float<T>(to_float(av[hf].v[j]) + (b ? to_float(bv[hf].v[j]) : 0.0f));
                float g = to_float(sum.v[j]);
                if (p > 0.0f) g = keep[8 * hf + j] ? g * scale : 0.0f;
                z.v[j] = from_float<T>(g);
            }
            if (grad_sum) *reinterpret_cast<Pack8<T> *>(grad_sum + i + 8 * hf) = sum;
            *reinterpret_cast<Pack8<T> *>(grad_z + i + 8 * hf) = z;
        }
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

// Enough blocks of 256 threads, each taking per_thread elements, to fill the GPU several times
// over; the kernels stride over the rest.
static unsigned int grid_for(int64_t n, int per_thread) {
    int64_t blocks = ((n + per_thread - 1) / per_thread + 255) / 256;
    return (unsigned int)(blocks < 132 * 16 ? (blocks > 0 ? blocks : 1) : 132 * 16);
}

static void require_multiple_of_8(int64_t n, const char *what) {
    if (n % 8) DIE("%s: %lld elements is not a multiple of 8", what, (long long)n);
}

// A slice must start on a Philox group: then each thread still draws exactly one group.
static void require_group_start(uint64_t first, const char *what) {
    if (first % PER_THREAD) DIE("%s: first element %llu is not a multiple of %d", what, (unsigned long long)first, PER_THREAD);
}

extern "C" void bias_dropout_add_forward_at(const void *x, const void *bias, const void *residual, void *out,
                                            int64_t rows, int cols, float p, uint64_t seed, uint64_t offset,
                                            uint64_t first_index, DType dtype) {
    int64_t n = rows * cols;
    require_multiple_of_8(cols, "bias_dropout_add_forward");
    require_group_start(first_index, "bias_dropout_add_forward_at");
    gpu_phase(CAT_ELEMENTWISE);
    DISPATCH_DTYPE(dtype, T,
                   bias_dropout_add_kernel<T><<<grid_for(n, PER_THREAD), 256>>>(
                       (const T *)x, (const T *)bias, (const T *)residual, (T *)out, n, cols, p,
                       philox_keys(seed), offset, first_index));
    CHECK_LAUNCH();
    gpu_phase_end();
}

extern "C" void bias_dropout_add_forward(const void *x, const void *bias, const void *residual,
                                         void *out, int64_t rows, int cols, float p, uint64_t seed,
                                         uint64_t offset, DType dtype) {
    bias_dropout_add_forward_at(x, bias, residual, out, rows, cols, p, seed, offset, 0, dtype);
}

extern "C" void add_dropout_backward_at(const void *a, const void *b, void *grad_sum, void *grad_z, int64_t n,
                                        float p, uint64_t seed, uint64_t offset, uint64_t first_index,
                                        DType dtype) {
    require_multiple_of_8(n, "add_dropout_backward");
    require_group_start(first_index, "add_dropout_backward_at");
    gpu_phase(CAT_ELEMENTWISE);
    DISPATCH_DTYPE(dtype, T,
                   add_dropout_backward_kernel<T><<<grid_for(n, PER_THREAD), 256>>>(
                       (const T *)a, (const T *)b, (T *)grad_sum, (T *)grad_z, n, p, philox_keys(seed), offset,
                       first_index));
    CHECK_LAUNCH();
    gpu_phase_end();
}

extern "C" void add_dropout_backward(const void *a, const void *b, void *grad_sum, void *grad_z,
                                     int64_t n, float p, uint64_t seed, uint64_t offset,
                                     DType dtype) {
    add_dropout_backward_at(a, b, grad_sum, grad_z, n, p, seed, offset, 0, dtype);
}

extern "C" void add_inplace(void *a, const void *b, int64_t n, DType dtype) {
    require_multiple_of_8(n, "add_inplace");
    gpu_phase(CAT_ELEMENTWISE);
    DISPATCH_DTYPE(dtype, T, add_inplace_kernel<T><<<grid_for(n, 8), 256>>>((T *)a, (const T *)b, n));
    CHECK_LAUNCH();
    gpu_phase_end();
}

// ---- GELU on strided views ---------------------------------------------------------------
// One thread per 8 columns of a row (cols % 8 == 0, rows 16-byte aligned). dy NULL: forward,
// out = GELU(x). Else backward, out = dy * GELU'(x), and where y is not NULL also y = GELU(x)
// (activation recomputation: GELU's output again, by the same gelu_tanh as forward's - the same
// bits). Each thread reads its 8 elements of dy and x before it writes any output, so out may
// be dy and y may be x (in place).
template <typename T>
__global__ void gelu_strided_kernel(const T *dy, int64_t dy_row, const T *x, int64_t x_row, T *out,
                                    int64_t out_row, T *y, int64_t y_row, int64_t rows, int cols) {
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
            if (y) {
                Pack8<T> a;
#pragma unroll
                for (int j = 0; j < 8; j++) a.v[j] = from_float<T>(gelu_tanh(to_float(xv.v[j])));
                *reinterpret_cast<Pack8<T> *>(y + r * y_row + c) = a;
            }
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
    gpu_phase(CAT_ELEMENTWISE);
    DISPATCH_DTYPE(dtype, T,
                   gelu_strided_kernel<T><<<grid_for(rows * cols, 8), 256>>>(NULL, 0, (const T *)x, x_row, (T *)y,
                                                                          y_row, NULL, 0, rows, cols));
    CHECK_LAUNCH();
    gpu_phase_end();
}

extern "C" void gelu_backward_recomputing_strided(const void *dy, int64_t dy_row, const void *x, int64_t x_row,
                                                  void *dx, int64_t dx_row, void *y, int64_t y_row, int64_t rows,
                                                  int cols, DType dtype) {
    require_multiple_of_8(cols, y ? "gelu_backward_recomputing_strided" : "gelu_backward_strided");
    gpu_phase(CAT_ELEMENTWISE);
    DISPATCH_DTYPE(dtype, T,
                   gelu_strided_kernel<T><<<grid_for(rows * cols, 8), 256>>>((const T *)dy, dy_row, (const T *)x,
                                                                          x_row, (T *)dx, dx_row, (T *)y, y_row,
                                                                          rows, cols));
    CHECK_LAUNCH();
    gpu_phase_end();
}

extern "C" void gelu_backward_strided(const void *dy, int64_t dy_row, const void *x, int64_t x_row, void *dx,
                                      int64_t dx_row, int64_t rows, int cols, DType dtype) {
    gelu_backward_recomputing_strided(dy, dy_row, x, x_row, dx, dx_row, NULL, 0, rows, cols, dtype);
}
