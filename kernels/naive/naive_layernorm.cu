// LayerNorm: one thread block per row for the row statistics, and a column reduction for
// the parameter gradients.
#include "common/gpu/gpu_phase.h"
#include "kernels/naive/block_reduce.cuh"
#include "kernels/naive/naive_layernorm.h"

static const int ROW_THREADS = 256;

// Two passes over the row (it stays in L1/L2): the mean first, then the variance as the
// mean of (x - mean)^2. That is more accurate than E[x^2] - E[x]^2, which cancels badly
// when the mean is large compared to the spread.
template <typename T>
__global__ void layernorm_forward_kernel(const T *x, const T *gamma, const T *beta, int cols,
                                         float eps, T *y, float *mean, float *rstd) {
    const int64_t row = blockIdx.x;
    const T *xr = x + row * cols;
    float sum = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) sum += to_float(xr[c]);
    const float mu = block_sum(sum) / cols;
    float sq = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float d = to_float(xr[c]) - mu;
        sq += d * d;
    }
    const float rs = rsqrtf(block_sum(sq) / cols + eps);
    for (int c = threadIdx.x; c < cols; c += blockDim.x)
        y[row * cols + c] = from_float<T>((to_float(xr[c]) - mu) * rs * to_float(gamma[c]) + to_float(beta[c]));
    if (threadIdx.x == 0) {
        mean[row] = mu;
        rstd[row] = rs;
    }
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * gamma, xhat = (x - mean) * rstd.
template <typename T>
__global__ void layernorm_backward_dx_kernel(const T *dy, const T *x, const T *gamma,
                                             const float *mean, const float *rstd, int cols, T *dx) {
    const int64_t row = blockIdx.x;
    const T *xr = x + row * cols, *dyr = dy + row * cols;
    const float mu = mean[row], rs = rstd[row];
    float sum_g = 0.0f, sum_g_xhat = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float g = to_float(dyr[c]) * to_float(gamma[c]);
        float xhat = (to_float(xr[c]) - mu) * rs;
        sum_g += g;
        sum_g_xhat += g * xhat;
    }
    const float mean_g = block_sum(sum_g) / cols;
    const float mean_g_xhat = block_sum(sum_g_xhat) / cols;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float g = to_float(dyr[c]) * to_float(gamma[c]);
        float xhat = (to_float(xr[c]) - mu) * rs;
        dx[row * cols + c] = from_float<T>(rs * (g - mean_g - xhat * mean_g_xhat));
    }
}

// dgamma[c] = sum_rows dy * xhat, dbeta[c] = sum_rows dy: a sum down each column.
// A block owns 32 adjacent columns (so a warp reads 32 neighbours of one row: coalesced)
// and its 32 warps split the rows; shared memory then adds the 32 partial sums.
// No atomics: the result is the same on every run.
template <typename T>
__global__ void layernorm_param_grad_kernel(const T *dy, const T *x, const float *mean,
                                            const float *rstd, int64_t rows, int cols, T *dgamma,
                                            T *dbeta) {
    __shared__ float part_g[32][33], part_b[32][33];  // +1 column: no bank conflicts
    const int c = blockIdx.x * 32 + threadIdx.x;
    float g = 0.0f, b = 0.0f;
    if (c < cols) {
        for (int64_t r = threadIdx.y; r < rows; r += blockDim.y) {
            float d = to_float(dy[r * cols + c]);
            g += d * (to_float(x[r * cols + c]) - mean[r]) * rstd[r];
            b += d;
        }
    }
    part_g[threadIdx.y][threadIdx.x] = g;
    part_b[threadIdx.y][threadIdx.x] = b;
    __syncthreads();
    if (threadIdx.y == 0 && c < cols) {
        for (int k = 1; k < 32; k++) {
            g += part_g[k][threadIdx.x];
            b += part_b[k][threadIdx.x];
        }
        dgamma[c] = from_float<T>(g);
        dbeta[c] = from_float<T>(b);
    }
}

extern "C" void naive_layernorm_forward(const void *x, const void *gamma, const void *beta, int64_t rows,
                                  int cols, float eps, void *y, float *mean, float *rstd,
                                  DType dtype) {
    if (rows <= 0) return;
    gpu_phase(CAT_LAYERNORM);
    DISPATCH_DTYPE(dtype, T,
                   layernorm_forward_kernel<T><<<(unsigned)rows, ROW_THREADS>>>(
                       (const T *)x, (const T *)gamma, (const T *)beta, cols, eps, (T *)y, mean, rstd));
    CHECK_LAUNCH();
    gpu_phase_end();
}

extern "C" void naive_layernorm_backward(const void *dy, const void *x, const void *gamma,
                                   const float *mean, const float *rstd, int64_t rows, int cols,
                                   void *dx, void *dgamma, void *dbeta, DType dtype) {
    if (rows <= 0) return;
    gpu_phase(CAT_LAYERNORM);
    DISPATCH_DTYPE(dtype, T, {
        layernorm_backward_dx_kernel<T><<<(unsigned)rows, ROW_THREADS>>>(
            (const T *)dy, (const T *)x, (const T *)gamma, mean, rstd, cols, (T *)dx);
        CHECK_LAUNCH();
        layernorm_param_grad_kernel<T><<<ceil_div(cols, 32), dim3(32, 32)>>>(
            (const T *)dy, (const T *)x, mean, rstd, rows, cols, (T *)dgamma, (T *)dbeta);
        CHECK_LAUNCH();
    });
    gpu_phase_end();
}
