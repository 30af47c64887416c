#include "kernels/naive/residual.h"

#include "common/gpu/gpu_phase.h"
#include "kernels/device_utils.cuh"

template <typename T>
__global__ void residual_add_kernel(const T *a, const T *b, int64_t n, T *out) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = from_float<T>(to_float(a[i]) + to_float(b[i]));
}

extern "C" void residual_add(const void *a, const void *b, int64_t n, void *out, DType dtype) {
    if (n <= 0) return;
    int64_t blocks = (n + 255) / 256;
    if (blocks > 65536) blocks = 65536;
    gpu_phase(CAT_ELEMENTWISE);
    DISPATCH_DTYPE(dtype, T,
                   residual_add_kernel<T><<<(unsigned)blocks, 256>>>((const T *)a, (const T *)b, n, (T *)out));
    CHECK_LAUNCH();
    gpu_phase_end();
}
