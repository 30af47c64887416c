// Casting to FP8 on the GPU (step 05's kernels).
#ifndef KERNELS_FP8_FP8_CAST_H
#define KERNELS_FP8_FP8_CAST_H

#include <stdint.h>

#include "common/fp8/fp8_format.h"
#include "common/core/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

// out[i] = CUDA's own conversion of x[i] (float) to FP8, saturating: the yardstick the C
// encoder (common/fp8/fp8_format.h) is tested against.
void fp8_encode_device(const float *x, uint8_t *out, int64_t n, Fp8Format format);

// The fused cast + transpose: out = fp8(x * scale) [rows, cols] AND out_t = its transpose
// [cols, rows], in one pass (FP8 GEMMs take only the "TN" layout, so weight gradients need
// transposed FP8 copies of activations and output gradients). *amax = max(*amax, max |x|).
// out or out_t may be NULL; rows and cols must be multiples of 8. scale and amax are device pointers: delayed scaling updates them
// on the GPU without a host round trip; *amax must start each step at 0.
void fp8_cast_transpose(const void *x, uint8_t *out, uint8_t *out_t, int64_t rows, int64_t cols,
                        const float *scale, float *amax, Fp8Format format, DType dtype);

// The same for GELU(x) (tanh form): the FP8 copies of a GELU output, which is then never
// stored in 16 bits (step 05's FC2 input). *amax is that of GELU(x).
void fp8_gelu_cast_transpose(const void *x, uint8_t *out, uint8_t *out_t, int64_t rows, int64_t cols,
                             const float *scale, float *amax, Fp8Format format, DType dtype);

// out_t [cols, rows] = the transpose of the FP8 codes x [rows, cols] (for an input that was
// written in FP8 by its producer, e.g. LayerNorm). rows and cols multiples of 8.
void fp8_transpose(const uint8_t *x, uint8_t *out_t, int64_t rows, int64_t cols);

// The same, also writing dbias[c] = sum over rows of x[r][c] (x's dtype): the bias gradient
// when x is a Linear's output gradient, computed while x is being read anyway (TE's
// cast_transpose_dbias) instead of by a kernel that reads it again. workspace: a float
// buffer of fp8_cast_transpose_dbias_workspace_bytes(rows, cols).
size_t fp8_cast_transpose_dbias_workspace_bytes(int64_t rows, int64_t cols);
void fp8_cast_transpose_dbias(const void *x, uint8_t *out, uint8_t *out_t, int64_t rows, int64_t cols,
                              const float *scale, float *amax, Fp8Format format, DType dtype, void *dbias,
                              float *workspace);

// The same for dy * GELU'(pre) (tanh form) instead of x: the output gradient of a Linear
// followed by a GELU, from the GELU output's gradient dy and the pre-activation pre (both
// [rows, cols], dtype); *amax and dbias are those of dy * GELU'(pre), which is never stored.
void fp8_dgelu_cast_transpose_dbias(const void *dy, const void *pre, uint8_t *out, uint8_t *out_t, int64_t rows,
                                    int64_t cols, const float *scale, float *amax, Fp8Format format, DType dtype,
                                    void *dbias, float *workspace);

// The scaling state of one FP8 tensor on the GPU, in one float array:
//   [0] scale, [4] scale_inv (16-byte aligned for cuBLASLt), [8 ...] the amax history, the
//   newest slot first (casts record into [8]).
enum { FP8_META_SCALE = 0, FP8_META_SCALE_INV = 4, FP8_META_HISTORY = 8 };

// After a step: the delayed-scaling update of common/fp8/fp8_recipe.h on the GPU (same rule:
// amax from the history's max or newest entry; keep the scale when amax is 0 or not finite;
// FLT_MAX on overflow; then roll the history and clear the newest slot).
void fp8_update_scale_device(float *meta, int history_len, float fp8_max, int margin, int most_recent);

#ifdef __cplusplus
}
#endif

#endif  // KERNELS_FP8_FP8_CAST_H
