// Fused elementwise kernels for the layer's residual branches.
//
// Unfused, "y = residual + dropout(x + bias)" is three kernels, each reading and writing the
// whole [tokens, hidden] tensor. Fused, it is one read of x and residual and one write of y:
// a third of the bytes. The dropout mask is not stored: it is recomputed from Philox (the
// same flat index, common/core/philox.h) in backward, which costs arithmetic, not bytes.
//
// All tensors are [rows, cols] row-major in the dtype given; n = rows * cols must be a
// multiple of 8 (every kernel moves 16 bytes per thread per access).
#ifndef KERNELS_FUSED_ELEMENTWISE_H
#define KERNELS_FUSED_ELEMENTWISE_H

#include <stdint.h>

#include "common/core/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

// out = residual + dropout(x + bias); bias [cols] may be NULL. Dropout element i uses the
// flat index i. out may alias residual.
void bias_dropout_add_forward(const void *x, const void *bias, const void *residual, void *out,
                              int64_t rows, int cols, float p, uint64_t seed, uint64_t offset,
                              DType dtype);

// The backward of "y = residual + dropout(z)" where y's gradient is the sum a + b (b may be
// NULL): writes grad_sum = a + b (the gradient reaching the residual) and
// grad_z = dropout'(a + b) = keep * (a + b) / (1 - p). grad_sum may be NULL.
void add_dropout_backward(const void *a, const void *b, void *grad_sum, void *grad_z, int64_t n,
                          float p, uint64_t seed, uint64_t offset, DType dtype);

// The same two on a slice of a bigger tensor (sequence parallelism: a rank's tokens of the
// [T, hidden] activation): element i of this call draws the mask of element first_index + i
// of the whole, so the slices together draw the unsharded tensor's mask. first_index must be
// a multiple of 16 (each thread draws one whole Philox group of 16 elements).
void bias_dropout_add_forward_at(const void *x, const void *bias, const void *residual, void *out,
                                 int64_t rows, int cols, float p, uint64_t seed, uint64_t offset,
                                 uint64_t first_index, DType dtype);
void add_dropout_backward_at(const void *a, const void *b, void *grad_sum, void *grad_z, int64_t n,
                             float p, uint64_t seed, uint64_t offset, uint64_t first_index, DType dtype);

// a += b.
void add_inplace(void *a, const void *b, int64_t n, DType dtype);

// GELU (tanh) on a [rows, cols] view of a wider tensor: row r of x starts at x + r * x_row,
// row r of y at y + r * y_row. Step 06 reads FC1's part of the fused input projection and
// writes next to the attention output, without copies.
void gelu_forward_strided(const void *x, int64_t x_row, void *y, int64_t y_row, int64_t rows, int cols,
                          DType dtype);
// dx = dy * GELU'(x), all three strided views.
void gelu_backward_strided(const void *dy, int64_t dy_row, const void *x, int64_t x_row, void *dx,
                           int64_t dx_row, int64_t rows, int cols, DType dtype);
// The same, and y = GELU(x) in the same pass (a fourth strided view; NULL: none): the output
// of GELU's forward computed again for a wgrad that did not keep it (step 07's
// --recompute-gelu), bit for bit forward's (the same device function on the same input), for
// one more write and no more reads. In place allowed: dx may be dy, y may be x (x is then
// overwritten by GELU(x) once its old values are read).
void gelu_backward_recomputing_strided(const void *dy, int64_t dy_row, const void *x, int64_t x_row, void *dx,
                                       int64_t dx_row, void *y, int64_t y_row, int64_t rows, int cols, DType dtype);

#ifdef __cplusplus
}
#endif

#endif  // KERNELS_FUSED_ELEMENTWISE_H
