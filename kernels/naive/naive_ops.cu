#include <math.h>

#include "common/gpu.h"
#include "common/philox.h"
#include "kernels/device_utils.cuh"
#include "kernels/naive/naive_ops.h"

// Sum of `x` over the block (blockDim.x a multiple of 32, at most 1024). All threads get it.
__device__ float block_sum(float x) {
    __shared__ float partial[32];
    __syncthreads();  // partial[] may still be in use by a previous call
    x = warp_sum(x);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) partial[warp] = x;
    __syncthreads();
    int warps = blockDim.x / 32;
    x = lane < warps ? partial[lane] : 0.0f;
    return warp_sum(x);
}

__device__ float block_max(float x) {
    __shared__ float partial[32];
    __syncthreads();
    x = warp_max(x);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) partial[warp] = x;
    __syncthreads();
    int warps = blockDim.x / 32;
    x = lane < warps ? partial[lane] : -INFINITY;
    return warp_max(x);
}

// ---- LayerNorm: one block per row, two passes over the row -----------------------------------
template <typename T>
__global__ void layernorm_forward_kernel(const T *x, const T *gamma, const T *beta, T *y, float *mean,
                                         float *rstd, int cols, float eps) {
    const T *xr = x + (int64_t)blockIdx.x * cols;
    float sum = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) sum += to_float(xr[c]);
    float mu = block_sum(sum) / cols;
    float var = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float d = to_float(xr[c]) - mu;
        var += d * d;
    }
    float rs = rsqrtf(block_sum(var) / cols + eps);
    for (int c = threadIdx.x; c < cols; c += blockDim.x)
        y[(int64_t)blockIdx.x * cols + c] =
            from_float<T>((to_float(xr[c]) - mu) * rs * to_float(gamma[c]) + to_float(beta[c]));
    if (threadIdx.x == 0) {
        mean[blockIdx.x] = mu;
        rstd[blockIdx.x] = rs;
    }
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * gamma.
template <typename T>
__global__ void layernorm_backward_dx_kernel(const T *dy, const T *x, const T *gamma, const float *mean,
                                             const float *rstd, T *dx, int cols) {
    int64_t base = (int64_t)blockIdx.x * cols;
    float mu = mean[blockIdx.x], rs = rstd[blockIdx.x];
    float sum_g = 0.0f, sum_gx = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float g = to_float(dy[base + c]) * to_float(gamma[c]);
        sum_g += g;
        sum_gx += g * (to_float(x[base + c]) - mu) * rs;
    }
    float mean_g = block_sum(sum_g) / cols;
    float mean_gx = block_sum(sum_gx) / cols;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float g = to_float(dy[base + c]) * to_float(gamma[c]);
        float xhat = (to_float(x[base + c]) - mu) * rs;
        dx[base + c] = from_float<T>(rs * (g - mean_g - xhat * mean_gx));
    }
}

// Column sums over many rows, in two stages so that the whole GPU works on them: stage 1
// gives each block 32 columns x a chunk of rows (threads along x read neighbouring columns:
// coalesced) and writes one float partial sum per (chunk, column); stage 2 adds the chunks.
// With_xhat = true sums dy * xhat as well (LayerNorm's dgamma) beside dy (dbeta, bias grad).
static const int COLSUM_CHUNKS = 128;

template <typename T, bool with_xhat>
__global__ void column_sums_stage1(const T *dy, const T *x, const float *mean, const float *rstd,
                                   float *partial_dy, float *partial_dyx, int64_t rows, int cols) {
    __shared__ float s_dy[8][33], s_dyx[8][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    int64_t per_chunk = (rows + gridDim.y - 1) / gridDim.y;
    int64_t r0 = blockIdx.y * per_chunk, r1 = min(rows, r0 + per_chunk);
    float a = 0.0f, b = 0.0f;
    if (c < cols) {
        for (int64_t r = r0 + threadIdx.y; r < r1; r += blockDim.y) {
            float g = to_float(dy[r * cols + c]);
            a += g;
            if (with_xhat) b += g * (to_float(x[r * cols + c]) - mean[r]) * rstd[r];
        }
    }
    s_dy[threadIdx.y][threadIdx.x] = a;
    s_dyx[threadIdx.y][threadIdx.x] = b;
    __syncthreads();
    if (threadIdx.y == 0 && c < cols) {
        for (int k = 1; k < 8; k++) {
            a += s_dy[k][threadIdx.x];
            b += s_dyx[k][threadIdx.x];
        }
        partial_dy[(int64_t)blockIdx.y * cols + c] = a;
        if (with_xhat) partial_dyx[(int64_t)blockIdx.y * cols + c] = b;
    }
}

template <typename T>
__global__ void column_sums_stage2(const float *partial, T *out, int chunks, int cols) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    float s = 0.0f;
    for (int k = 0; k < chunks; k++) s += partial[(int64_t)k * cols + c];
    out[c] = from_float<T>(s);
}

// One float scratch buffer for the partial sums, grown when a larger one is needed and
// kept (it is tiny: chunks x cols floats). Everything runs on one stream, so reusing it
// between launches is safe.
static float *column_sums_scratch(size_t floats) {
    static float *scratch;
    static size_t capacity;
    if (floats > capacity) {
        if (scratch) dev_free(scratch);
        scratch = (float *)dev_alloc(floats * sizeof(float));
        capacity = floats;
    }
    return scratch;
}

// dsum[c] = sum_r dy[r, c] and, if dsum_xhat, dsum_xhat[c] = sum_r dy * (x - mean) * rstd.
template <typename T>
static void column_sums(const T *dy, const T *x, const float *mean, const float *rstd, T *dsum,
                        T *dsum_xhat, int64_t rows, int cols) {
    int chunks = (int)(rows < COLSUM_CHUNKS ? rows : COLSUM_CHUNKS);
    float *partial = column_sums_scratch((size_t)chunks * cols * 2);
    float *partial_x = partial + (size_t)chunks * cols;
    dim3 grid(ceil_div(cols, 32), chunks), block(32, 8);
    if (dsum_xhat)
        column_sums_stage1<T, true><<<grid, block>>>(dy, x, mean, rstd, partial, partial_x, rows, cols);
    else
        column_sums_stage1<T, false><<<grid, block>>>(dy, x, mean, rstd, partial, partial_x, rows, cols);
    CHECK_LAUNCH();
    column_sums_stage2<T><<<ceil_div(cols, 256), 256>>>(partial, dsum, chunks, cols);
    CHECK_LAUNCH();
    if (dsum_xhat) {
        column_sums_stage2<T><<<ceil_div(cols, 256), 256>>>(partial_x, dsum_xhat, chunks, cols);
        CHECK_LAUNCH();
    }
}

// ---- bias ----------------------------------------------------------------------------------
template <typename T>
__global__ void bias_add_kernel(T *y, const T *bias, int64_t n, int cols) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = from_float<T>(to_float(y[i]) + to_float(bias[i % cols]));
}

// ---- GELU (tanh approximation) ---------------------------------------------------------
__device__ __forceinline__ float gelu(float x) {
    const float k = 0.7978845608f, c = 0.044715f;
    return 0.5f * x * (1.0f + tanhf(k * (x + c * x * x * x)));
}

__device__ __forceinline__ float gelu_grad(float x) {
    const float k = 0.7978845608f, c = 0.044715f;
    float t = tanhf(k * (x + c * x * x * x));
    return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * k * (1.0f + 3.0f * c * x * x);
}

template <typename T>
__global__ void gelu_forward_kernel(const T *x, T *y, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = from_float<T>(gelu(to_float(x[i])));
}

template <typename T>
__global__ void gelu_backward_kernel(const T *dy, const T *x, T *dx, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dx[i] = from_float<T>(to_float(dy[i]) * gelu_grad(to_float(x[i])));
}

// ---- dropout, add ------------------------------------------------------------------------
template <typename T>
__global__ void dropout_kernel(const T *x, T *y, int64_t n, float p, uint64_t seed, uint64_t offset) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = to_float(x[i]);
    if (p > 0.0f) v = dropout_keep(seed, offset, (uint64_t)i, p) ? v / (1.0f - p) : 0.0f;
    y[i] = from_float<T>(v);
}

template <typename T>
__global__ void add_kernel(const T *a, const T *b, T *out, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = from_float<T>(to_float(a[i]) + to_float(b[i]));
}

// ---- softmax: one block per row ------------------------------------------------------------
template <typename T>
__global__ void softmax_forward_kernel(const T *scores, T *probs, int cols, int causal) {
    int64_t base = (int64_t)blockIdx.x * cols;
    int last = causal ? (int)(blockIdx.x % cols) : cols - 1;  // the last key this query sees
    float m = -INFINITY;
    for (int c = threadIdx.x; c <= last; c += blockDim.x) m = fmaxf(m, to_float(scores[base + c]));
    m = block_max(m);
    float s = 0.0f;
    for (int c = threadIdx.x; c <= last; c += blockDim.x) s += __expf(to_float(scores[base + c]) - m);
    float inv = 1.0f / block_sum(s);
    for (int c = threadIdx.x; c < cols; c += blockDim.x)
        probs[base + c] = from_float<T>(c <= last ? __expf(to_float(scores[base + c]) - m) * inv : 0.0f);
}

template <typename T>
__global__ void softmax_backward_kernel(const T *probs, const T *dprobs, T *dscores, int cols) {
    int64_t base = (int64_t)blockIdx.x * cols;
    float dot = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x)
        dot += to_float(probs[base + c]) * to_float(dprobs[base + c]);
    dot = block_sum(dot);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float p = to_float(probs[base + c]);
        dscores[base + c] = from_float<T>(p * (to_float(dprobs[base + c]) - dot));
    }
}

// ---- launchers -----------------------------------------------------------------------------
static const int THREADS = 256;

extern "C" void naive_layernorm_forward(const void *x, const void *gamma, const void *beta, void *y,
                                        float *mean, float *rstd, int64_t rows, int cols, float eps,
                                        DType dtype) {
    DISPATCH_DTYPE(dtype, T,
                   layernorm_forward_kernel<T><<<(unsigned)rows, THREADS>>>(
                       (const T *)x, (const T *)gamma, (const T *)beta, (T *)y, mean, rstd, cols, eps));
    CHECK_LAUNCH();
}

extern "C" void naive_layernorm_backward(const void *dy, const void *x, const void *gamma,
                                         const float *mean, const float *rstd, void *dx, void *dgamma,
                                         void *dbeta, int64_t rows, int cols, DType dtype) {
    DISPATCH_DTYPE(dtype, T, {
        layernorm_backward_dx_kernel<T><<<(unsigned)rows, THREADS>>>(
            (const T *)dy, (const T *)x, (const T *)gamma, mean, rstd, (T *)dx, cols);
        CHECK_LAUNCH();
        column_sums<T>((const T *)dy, (const T *)x, mean, rstd, (T *)dbeta, (T *)dgamma, rows, cols);
    });
}

extern "C" void naive_bias_add(void *y, const void *bias, int64_t rows, int cols, DType dtype) {
    int64_t n = rows * cols;
    DISPATCH_DTYPE(dtype, T,
                   bias_add_kernel<T><<<ceil_div(n, THREADS), THREADS>>>((T *)y, (const T *)bias, n, cols));
    CHECK_LAUNCH();
}

extern "C" void naive_bias_grad(const void *dy, void *dbias, int64_t rows, int cols, DType dtype) {
    DISPATCH_DTYPE(dtype, T, column_sums<T>((const T *)dy, NULL, NULL, NULL, (T *)dbias, NULL, rows, cols));
}

extern "C" void naive_gelu_forward(const void *x, void *y, int64_t n, DType dtype) {
    DISPATCH_DTYPE(dtype, T,
                   gelu_forward_kernel<T><<<ceil_div(n, THREADS), THREADS>>>((const T *)x, (T *)y, n));
    CHECK_LAUNCH();
}

extern "C" void naive_gelu_backward(const void *dy, const void *x, void *dx, int64_t n, DType dtype) {
    DISPATCH_DTYPE(dtype, T,
                   gelu_backward_kernel<T><<<ceil_div(n, THREADS), THREADS>>>((const T *)dy,
                                                                              (const T *)x, (T *)dx, n));
    CHECK_LAUNCH();
}

extern "C" void naive_dropout(const void *x, void *y, int64_t n, float p, uint64_t seed,
                              uint64_t offset, DType dtype) {
    DISPATCH_DTYPE(dtype, T,
                   dropout_kernel<T><<<ceil_div(n, THREADS), THREADS>>>((const T *)x, (T *)y, n, p,
                                                                        seed, offset));
    CHECK_LAUNCH();
}

extern "C" void naive_add(const void *a, const void *b, void *out, int64_t n, DType dtype) {
    DISPATCH_DTYPE(dtype, T,
                   add_kernel<T><<<ceil_div(n, THREADS), THREADS>>>((const T *)a, (const T *)b,
                                                                    (T *)out, n));
    CHECK_LAUNCH();
}

extern "C" void naive_softmax_forward(const void *scores, void *probs, int64_t rows, int cols,
                                      int causal, DType dtype) {
    DISPATCH_DTYPE(dtype, T,
                   softmax_forward_kernel<T><<<(unsigned)rows, THREADS>>>((const T *)scores, (T *)probs,
                                                                          cols, causal));
    CHECK_LAUNCH();
}

extern "C" void naive_softmax_backward(const void *probs, const void *dprobs, void *dscores,
                                       int64_t rows, int cols, DType dtype) {
    DISPATCH_DTYPE(dtype, T,
                   softmax_backward_kernel<T><<<(unsigned)rows, THREADS>>>(
                       (const T *)probs, (const T *)dprobs, (T *)dscores, cols));
    CHECK_LAUNCH();
}
