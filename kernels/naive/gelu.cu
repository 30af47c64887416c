#include "kernels/naive/gelu.h"

#include "common/gpu/gpu_phase.h"
#include "kernels/device_utils.cuh"

template <typename T>
__global__ void gelu_forward_kernel(const T *x, int64_t n, T *y) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float v = to_float(x[i]);
        y[i] = from_float<T>(gelu_tanh(v));
    }
}

// dx = dy * GELU'(x) (device_utils.cuh has the formula).
template <typename T>
__global__ void gelu_backward_kernel(const T *dy, const T *x, int64_t n, T *dx) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float v = to_float(x[i]);
        dx[i] = from_float<T>(to_float(dy[i]) * gelu_tanh_grad(v));
    }
}

// Enough blocks to fill the GPU several times over; the kernels loop over the rest.
static unsigned elementwise_blocks(int64_t n) {
    int64_t blocks = (n + 255) / 256;
    return (unsigned)(blocks < 65536 ? blocks : 65536);
}

extern "C" void gelu_forward(const void *x, int64_t n, void *y, DType dtype) {
    if (n <= 0) return;
    gpu_phase(CAT_ELEMENTWISE);
    DISPATCH_DTYPE(dtype, T, gelu_forward_kernel<T><<<elementwise_blocks(n), 256>>>((const T *)x, n, (T *)y));
    CHECK_LAUNCH();
    gpu_phase_end();
}

extern "C" void gelu_backward(const void *dy, const void *x, int64_t n, void *dx, DType dtype) {
    if (n <= 0) return;
    gpu_phase(CAT_ELEMENTWISE);
    DISPATCH_DTYPE(dtype, T,
                   gelu_backward_kernel<T><<<elementwise_blocks(n), 256>>>((const T *)dy, (const T *)x, n, (T *)dx));
    CHECK_LAUNCH();
    gpu_phase_end();
}
