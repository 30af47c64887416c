// Step 01's kernels: one plain kernel per op, the way eager PyTorch runs the layer.
//
// Each op reads its inputs from device memory and writes its output back: simple to read,
// and the baseline that the later steps' fusions improve on. Tensors are row-major, in the
// storage type `dtype` (fp16 or bf16); statistics (mean, rstd) are float32. Every launch is
// checked (CHECK_LAUNCH).
#ifndef KERNELS_NAIVE_NAIVE_OPS_H
#define KERNELS_NAIVE_NAIVE_OPS_H

#include <stdint.h>

#include "common/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

// LayerNorm over rows of length cols: y = (x - mean) * rstd * gamma + beta; saves mean, rstd.
void naive_layernorm_forward(const void *x, const void *gamma, const void *beta, void *y,
                             float *mean, float *rstd, int64_t rows, int cols, float eps, DType dtype);
// dx (overwritten), dgamma and dbeta (overwritten, [cols]).
void naive_layernorm_backward(const void *dy, const void *x, const void *gamma, const float *mean,
                              const float *rstd, void *dx, void *dgamma, void *dbeta, int64_t rows,
                              int cols, DType dtype);

// y[r, c] += bias[c]
void naive_bias_add(void *y, const void *bias, int64_t rows, int cols, DType dtype);
// dbias[c] = sum_r dy[r, c]
void naive_bias_grad(const void *dy, void *dbias, int64_t rows, int cols, DType dtype);

// GELU, tanh approximation.
void naive_gelu_forward(const void *x, void *y, int64_t n, DType dtype);
void naive_gelu_backward(const void *dy, const void *x, void *dx, int64_t n, DType dtype);

// y = keep ? x / (1 - p) : 0, element i keyed by logical index i (common/philox.h). The mask
// is recomputed, not stored: backward calls the same function on the gradient.
void naive_dropout(const void *x, void *y, int64_t n, float p, uint64_t seed, uint64_t offset,
                   DType dtype);

// out = a + b (out may alias a or b)
void naive_add(const void *a, const void *b, void *out, int64_t n, DType dtype);

// Row softmax of `scores` ([rows, cols]; already scaled) into probs, in float32 arithmetic.
// causal: row r is query i = r % cols, and keys j > i get probability 0.
void naive_softmax_forward(const void *scores, void *probs, int64_t rows, int cols, int causal,
                           DType dtype);
// dscores = probs * (dprobs - rowsum(dprobs * probs))
void naive_softmax_backward(const void *probs, const void *dprobs, void *dscores, int64_t rows,
                            int cols, DType dtype);

#ifdef __cplusplus
}
#endif

#endif  // KERNELS_NAIVE_NAIVE_OPS_H
