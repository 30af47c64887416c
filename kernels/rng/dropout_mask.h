// The dropout mask as bytes (1 = keep), drawn on the GPU from the shared Philox stream.
// Used by tests (GPU mask == host mask) and by kernels that want a mask they can read
// twice; fused kernels call dropout_keep() from common/core/philox.h directly instead.
#ifndef KERNELS_RNG_DROPOUT_MASK_H
#define KERNELS_RNG_DROPOUT_MASK_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// mask[i] = dropout_keep(seed, offset, first_index + i, p) for i in [0, n).
void dropout_mask_fill(uint8_t *mask, int64_t n, uint64_t first_index, float p, uint64_t seed,
                       uint64_t offset);

#ifdef __cplusplus
}
#endif

#endif  // KERNELS_RNG_DROPOUT_MASK_H
