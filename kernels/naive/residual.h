// The residual connection: out = a + b, elementwise over n values of `dtype`.
// Used forward (y = x + dropout(proj), out = y + mlp) and backward, where the gradient of
// a residual branch joins the gradient that skipped it. out may alias a or b.
#ifndef KERNELS_NAIVE_RESIDUAL_H
#define KERNELS_NAIVE_RESIDUAL_H

#include <stdint.h>

#include "common/core/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

void residual_add(const void *a, const void *b, int64_t n, void *out, DType dtype);

#ifdef __cplusplus
}
#endif

#endif  // KERNELS_NAIVE_RESIDUAL_H
