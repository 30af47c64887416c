// The bias of a Linear, kept apart from the matrix product as eager PyTorch does it:
// forward adds the bias to every row, backward sums the gradient down each column.
// y and dy are [rows, cols] row-major, bias [cols], all in `dtype`.
#ifndef KERNELS_NAIVE_BIAS_H
#define KERNELS_NAIVE_BIAS_H

#include <stdint.h>

#include "common/core/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

// y[r, c] += bias[c], in place.
void bias_add(void *y, const void *bias, int64_t rows, int cols, DType dtype);

// dbias[c] = sum over r of dy[r, c] (overwritten).
void bias_grad(const void *dy, int64_t rows, int cols, void *dbias, DType dtype);

#ifdef __cplusplus
}
#endif

#endif  // KERNELS_NAIVE_BIAS_H
