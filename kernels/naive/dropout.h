// Dropout with the shared Philox mask (common/core/philox.h): y = keep ? x / (1 - p) : 0, where
// element i of the array is keyed by its flat index i: keep = dropout_keep(seed, offset, i, p),
// and p is the drop probability as drawn (a multiple of 1/256: dropout_keep_scale(p) = 1 / (1 - p)).
//
// The mask is never stored. Backward draws it again from the same (seed, offset, index):
// Philox is a pure function, so the second draw is the same mask, and we save the bytes of
// a mask tensor (eager PyTorch stores one) for a little arithmetic.
//
// Hidden dropout on [s, b, h] is keyed by the flat index (dropout_forward); the attention
// probabilities, stored as [batch * heads, seq, seq], by attention's numbering
// (attention_dropout_forward; common/core/philox.h says why it differs), which the fused attention
// kernels of step 04 use too.
#ifndef KERNELS_NAIVE_DROPOUT_H
#define KERNELS_NAIVE_DROPOUT_H

#include <stdint.h>

#include "common/core/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

// y may alias x. p == 0 copies x to y.
void dropout_forward(const void *x, int64_t n, float p, uint64_t seed, uint64_t offset, void *y,
                     DType dtype);
// Dropout is linear, so its backward is the same masking and scaling of the gradient.
void dropout_backward(const void *dy, int64_t n, float p, uint64_t seed, uint64_t offset, void *dx,
                      DType dtype);

// Dropout of attention's probabilities [rows = batch * heads * seq, seq] (row r = (b * heads +
// h) * seq + i), probability (r, j) keyed by attention_dropout_index(b * heads + h, i, j, seq).
// y may alias probs.
void attention_dropout_forward(const void *probs, int64_t rows, int seq, float p, uint64_t seed, uint64_t offset,
                               void *y, DType dtype);
void attention_dropout_backward(const void *dy, int64_t rows, int seq, float p, uint64_t seed, uint64_t offset,
                                void *dx, DType dtype);

#ifdef __cplusplus
}
#endif

#endif  // KERNELS_NAIVE_DROPOUT_H
