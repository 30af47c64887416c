#include "common/core/philox.h"
#include "kernels/device_utils.cuh"
#include "kernels/rng/dropout_mask.h"

// One thread per group of four elements: one Philox call gives all four uniforms.
__global__ void dropout_mask_kernel(uint8_t *mask, int64_t n, uint64_t first_index, float p,
                                    uint64_t seed, uint64_t offset) {
    int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * 4;
    for (int j = 0; j < 4 && i + j < n; j++)
        mask[i + j] = (uint8_t)dropout_keep(seed, offset, first_index + (uint64_t)(i + j), p);
}

extern "C" void dropout_mask_fill(uint8_t *mask, int64_t n, uint64_t first_index, float p,
                                  uint64_t seed, uint64_t offset) {
    if (n <= 0) return;
    dropout_mask_kernel<<<ceil_div((n + 3) / 4, 256), 256>>>(mask, n, first_index, p, seed, offset);
    CHECK_LAUNCH();
}
