// The split LayerNorm's kernels: see split_layernorm.h. Plain and readable rather than
// tuned: one block per row for the per-row sums, one thread per column for dgamma/dbeta.
#include "steps/07_tensor_parallel/split_layernorm.h"

#include "common/gpu/cuda_check.h"
#include "kernels/device_utils.cuh"

static const int THREADS = 256;

// Sum of two values over the block; every thread gets both totals.
__device__ __forceinline__ float2 block_sum2(float a, float b) {
    __shared__ float2 partial[32];
    __shared__ float2 total;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = (blockDim.x + 31) / 32;
    a = warp_sum(a), b = warp_sum(b);
    __syncthreads();
    if (lane == 0) partial[warp] = make_float2(a, b);
    __syncthreads();
    if (warp == 0) {
        float2 p = lane < warps ? partial[lane] : make_float2(0.0f, 0.0f);
        float sa = warp_sum(p.x), sb = warp_sum(p.y);
        if (lane == 0) total = make_float2(sa, sb);
    }
    __syncthreads();
    return total;
}

template <typename T>
__global__ void partial_stats_kernel(const T *z, int cols, float *stats) {
    const T *zr = z + (int64_t)blockIdx.x * cols;
    float s = 0.0f, q = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float v = to_float(zr[c]);
        s += v, q += v * v;
    }
    float2 t = block_sum2(s, q);
    if (threadIdx.x == 0) stats[2 * blockIdx.x] = t.x, stats[2 * blockIdx.x + 1] = t.y;
}

template <typename T>
__global__ void forward_apply_kernel(const T *z, const T *gamma, const T *beta, const float *stats,
                                     int cols, int full_cols, float eps, T *y, float *mean, float *rstd) {
    const int64_t row = blockIdx.x;
    float mu = stats[2 * row] / full_cols;
    float var = fmaxf(stats[2 * row + 1] / full_cols - mu * mu, 0.0f);  // E[z^2] - E[z]^2
    float rs = rsqrtf(var + eps);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float xhat = (to_float(z[row * cols + c]) - mu) * rs;
        y[row * cols + c] = from_float<T>(xhat * to_float(gamma[c]) + to_float(beta[c]));
    }
    if (threadIdx.x == 0) mean[row] = mu, rstd[row] = rs;
}

template <typename T>
__global__ void partial_grad_sums_kernel(const T *dy, const T *z, const T *gamma, const float *mean,
                                         const float *rstd, int cols, float *sums) {
    const int64_t row = blockIdx.x;
    float sg = 0.0f, sgx = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float xhat = (to_float(z[row * cols + c]) - mean[row]) * rstd[row];
        float g = to_float(dy[row * cols + c]) * to_float(gamma[c]);
        sg += g, sgx += g * xhat;
    }
    float2 t = block_sum2(sg, sgx);
    if (threadIdx.x == 0) sums[2 * row] = t.x, sums[2 * row + 1] = t.y;
}

template <typename T>
__global__ void backward_apply_kernel(const T *dy, const T *z, const T *gamma, const float *mean,
                                      const float *rstd, const float *sums, int cols, int full_cols, T *dz) {
    const int64_t row = blockIdx.x;
    float mg = sums[2 * row] / full_cols, mgx = sums[2 * row + 1] / full_cols;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float xhat = (to_float(z[row * cols + c]) - mean[row]) * rstd[row];
        float g = to_float(dy[row * cols + c]) * to_float(gamma[c]);
        dz[row * cols + c] = from_float<T>(rstd[row] * (g - mg - xhat * mgx));
    }
}

// One thread per column walks down all rows: neighbouring threads read neighbouring
// columns, so the loads are coalesced.
template <typename T>
__global__ void param_grads_kernel(const T *dy, const T *z, const float *mean, const float *rstd,
                                   int64_t rows, int cols, T *dgamma, T *dbeta) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    float dg = 0.0f, db = 0.0f;
    for (int64_t r = 0; r < rows; r++) {
        float g = to_float(dy[r * cols + c]);
        dg += g * (to_float(z[r * cols + c]) - mean[r]) * rstd[r];
        db += g;
    }
    dgamma[c] = from_float<T>(dg), dbeta[c] = from_float<T>(db);
}

extern "C" void split_ln_partial_stats(const void *z, int64_t rows, int cols, float *stats, DType dtype) {
    if (rows <= 0) return;
    DISPATCH_DTYPE(dtype, T, partial_stats_kernel<T><<<(unsigned)rows, THREADS>>>((const T *)z, cols, stats));
    CHECK_LAUNCH();
}

extern "C" void split_ln_forward_apply(const void *z, const void *gamma, const void *beta, const float *stats,
                                       int64_t rows, int cols, int full_cols, float eps, void *y, float *mean,
                                       float *rstd, DType dtype) {
    if (rows <= 0) return;
    DISPATCH_DTYPE(dtype, T, forward_apply_kernel<T><<<(unsigned)rows, THREADS>>>(
        (const T *)z, (const T *)gamma, (const T *)beta, stats, cols, full_cols, eps, (T *)y, mean, rstd));
    CHECK_LAUNCH();
}

extern "C" void split_ln_partial_grad_sums(const void *dy, const void *z, const void *gamma, const float *mean,
                                           const float *rstd, int64_t rows, int cols, float *sums, DType dtype) {
    if (rows <= 0) return;
    DISPATCH_DTYPE(dtype, T, partial_grad_sums_kernel<T><<<(unsigned)rows, THREADS>>>(
        (const T *)dy, (const T *)z, (const T *)gamma, mean, rstd, cols, sums));
    CHECK_LAUNCH();
}

extern "C" void split_ln_backward_apply(const void *dy, const void *z, const void *gamma, const float *mean,
                                        const float *rstd, const float *sums, int64_t rows, int cols,
                                        int full_cols, void *dz, DType dtype) {
    if (rows <= 0) return;
    DISPATCH_DTYPE(dtype, T, backward_apply_kernel<T><<<(unsigned)rows, THREADS>>>(
        (const T *)dy, (const T *)z, (const T *)gamma, mean, rstd, sums, cols, full_cols, (T *)dz));
    CHECK_LAUNCH();
}

extern "C" void split_ln_param_grads(const void *dy, const void *z, const float *mean, const float *rstd,
                                     int64_t rows, int cols, void *dgamma, void *dbeta, DType dtype) {
    if (rows <= 0) return;
    DISPATCH_DTYPE(dtype, T, param_grads_kernel<T><<<(unsigned)((cols + THREADS - 1) / THREADS), THREADS>>>(
        (const T *)dy, (const T *)z, mean, rstd, rows, cols, (T *)dgamma, (T *)dbeta));
    CHECK_LAUNCH();
}
