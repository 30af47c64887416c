#include "kernels/naive/bias.h"

#include "common/gpu/gpu_phase.h"
#include "kernels/device_utils.cuh"

// A 2D grid: x over columns, y over rows, so no thread divides by cols to find its column.
// gridDim.y is capped at 65535, hence the loop over rows.
template <typename T>
__global__ void bias_add_kernel(T *y, const T *bias, int64_t rows, int cols) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    const float b = to_float(bias[c]);
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y)
        y[r * cols + c] = from_float<T>(to_float(y[r * cols + c]) + b);
}

// One block per 32 columns; its 32 warps each sum a share of the rows (a warp reads 32
// adjacent values of a row), then shared memory adds the 32 partial sums in a fixed order.
template <typename T>
__global__ void bias_grad_kernel(const T *dy, int64_t rows, int cols, T *dbias) {
    __shared__ float part[32][33];  // +1: threads of a warp hit different banks
    const int c = blockIdx.x * 32 + threadIdx.x;
    float sum = 0.0f;
    if (c < cols)
        for (int64_t r = threadIdx.y; r < rows; r += blockDim.y) sum += to_float(dy[r * cols + c]);
    part[threadIdx.y][threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.y == 0 && c < cols) {
        for (int k = 1; k < 32; k++) sum += part[k][threadIdx.x];
        dbias[c] = from_float<T>(sum);
    }
}

extern "C" void bias_add(void *y, const void *bias, int64_t rows, int cols, DType dtype) {
    if (rows <= 0) return;
    dim3 grid(ceil_div(cols, 256), (unsigned)(rows < 65535 ? rows : 65535));
    gpu_phase(CAT_ELEMENTWISE);
    DISPATCH_DTYPE(dtype, T, bias_add_kernel<T><<<grid, 256>>>((T *)y, (const T *)bias, rows, cols));
    CHECK_LAUNCH();
    gpu_phase_end();
}

extern "C" void bias_grad(const void *dy, int64_t rows, int cols, void *dbias, DType dtype) {
    gpu_phase(CAT_ELEMENTWISE);
    DISPATCH_DTYPE(dtype, T,
                   bias_grad_kernel<T><<<ceil_div(cols, 32), dim3(32, 32)>>>((const T *)dy, rows, cols, (T *)dbias));
    CHECK_LAUNCH();
    gpu_phase_end();
}
