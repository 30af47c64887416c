// GELU, tanh approximation (PyTorch's approximate="tanh"):
//   gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
// Computed in fp32, stored in `dtype`. n elements, any layout.
#ifndef KERNELS_NAIVE_GELU_H
#define KERNELS_NAIVE_GELU_H

#include <stdint.h>

#include "common/core/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

void gelu_forward(const void *x, int64_t n, void *y, DType dtype);
// dx = dy * gelu'(x); x is the forward's input. dx may alias dy.
void gelu_backward(const void *dy, const void *x, int64_t n, void *dx, DType dtype);

#ifdef __cplusplus
}
#endif

#endif  // KERNELS_NAIVE_GELU_H
