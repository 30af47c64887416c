#include "kernels/naive/dropout.h"

#include "common/philox.h"
#include "kernels/device_utils.cuh"

// One thread per group of 16 consecutive elements: a single Philox call gives the 16 random
// bytes of the group (common/philox.h), so drawing costs a sixteenth of a call per element.
template <typename T>
__global__ void dropout_kernel(const T *x, int64_t n, float p, uint64_t seed, uint64_t offset, T *y) {
    const int64_t groups = (n + 15) / 16;
    const float scale = dropout_keep_scale(p);
    const uint32_t threshold = dropout_threshold(p);
    for (int64_t g = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; g < groups; g += (int64_t)gridDim.x * blockDim.x) {
        Philox4 r = dropout_random_bytes(seed, offset, (uint64_t)g * 16);
        for (int k = 0; k < 16; k++) {
            int64_t i = g * 16 + k;
            if (i >= n) break;
            int keep = dropout_byte(r, k) >= threshold;
            y[i] = from_float<T>(keep ? to_float(x[i]) * scale : 0.0f);
        }
    }
}

extern "C" void dropout_forward(const void *x, int64_t n, float p, uint64_t seed, uint64_t offset,
                                void *y, DType dtype) {
    if (n <= 0) return;
    if (p == 0.0f) {  // nothing dropped, nothing scaled: skip the random numbers
        if (x != y) CUDA_CHECK(cudaMemcpy(y, x, (size_t)n * 2, cudaMemcpyDeviceToDevice));
        return;
    }
    int64_t blocks = ((n + 15) / 16 + 255) / 256;
    if (blocks > 65536) blocks = 65536;
    DISPATCH_DTYPE(dtype, T,
                   dropout_kernel<T><<<(unsigned)blocks, 256>>>((const T *)x, n, p, seed, offset, (T *)y));
    CHECK_LAUNCH();
}

extern "C" void dropout_backward(const void *dy, int64_t n, float p, uint64_t seed, uint64_t offset,
                                 void *dx, DType dtype) {
    dropout_forward(dy, n, p, seed, offset, dx, dtype);
}
