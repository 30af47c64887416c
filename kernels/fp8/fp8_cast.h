// Casting to FP8 on the GPU (step 05's kernels).
#ifndef KERNELS_FP8_FP8_CAST_H
#define KERNELS_FP8_FP8_CAST_H

#include <stdint.h>

#include "common/fp8.h"
#include "common/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

// out[i] = CUDA's own conversion of x[i] (float) to FP8, saturating: the yardstick the C
// encoder (common/fp8.h) is tested against.
void fp8_encode_device(const float *x, uint8_t *out, int64_t n, Fp8Format format);

// out = fp8(x * scale) for a 16-bit tensor x; *amax = max(*amax, max |x|) (an atomic max on
// a device float, which must start at 0 each step). scale and amax are device pointers:
// delayed scaling updates them on the GPU without a host round trip.
void fp8_cast_amax(const void *x, uint8_t *out, int64_t n, const float *scale, float *amax,
                   Fp8Format format, DType dtype);

#ifdef __cplusplus
}
#endif

#endif  // KERNELS_FP8_FP8_CAST_H
