// Linear: y = x W^T + b, Transformer-Engine style, on cuBLASLt.
//
//   forward    one GEMM; the bias is added in its epilogue (no separate bias kernel), and
//              optionally a residual r is added too: y = x W^T + b + r (beta = 1)
//   backward   dx = dy W                    one GEMM
//              dW = dy^T x, db = sum_t dy   one GEMM: the bias gradient comes out of its
//                                           epilogue (BGRADB), not from a reduction kernel
//
// Row-major shapes: x [tokens, in], W [out, in] (PyTorch's layout), y [tokens, out].
// The module owns W, b and their gradients (device, in the layer's dtype); it does not copy
// x: forward remembers the pointer, and backward reads x from there.
#ifndef MODULES_LINEAR_H
#define MODULES_LINEAR_H

#include <stdint.h>

#include "common/core/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int in, out;
    DType dtype;
    void *weight, *bias;    // [out, in], [out]
    void *dweight, *dbias;  // gradients, overwritten by each backward
    const void *saved_x;    // the input of the last forward
} Linear;

// Uploads the host weight [out, in] and bias [out] (bias may be NULL: no bias).
void linear_init(Linear *l, int in, int out, const float *weight, const float *bias, DType dtype);
void linear_free(Linear *l);
// y = x W^T + b (+ residual if not NULL; residual may alias y).
void linear_forward(Linear *l, const void *x, void *y, int64_t tokens, const void *residual);
// dx = dy W (skipped if dx is NULL); dW and db from dy and the saved x.
void linear_backward(Linear *l, const void *dy, void *dx, int64_t tokens);
// Copies dW and db (if there is a bias) to host floats.
void linear_read_grads(const Linear *l, float *dweight, float *dbias);
// New values for W and b (host floats, rounded to the module's dtype), e.g. after an optimizer
// step on float master weights.
void linear_load_params(Linear *l, const float *weight, const float *bias);

// The three products, for modules that fuse around them (layernorm_mlp.c):
// D [tokens, out] = x W^T with an epilogue, in row-major terms.
void linear_gemm_forward(const Linear *l, const void *x, void *y, int64_t tokens, int epilogue,
                         void *bias, void *aux, const void *residual);
// dx [tokens, in] = dy W with an epilogue (aux is [tokens, in]).
void linear_gemm_backward_input(const Linear *l, const void *dy, void *dx, int64_t tokens,
                                int epilogue, void *bias, void *aux);
// dW [out, in] = dy^T x, and db = sum over tokens of dy (if the module has a bias).
void linear_gemm_backward_weight(const Linear *l, const void *dy, const void *x, int64_t tokens);

#ifdef __cplusplus
}
#endif

#endif  // MODULES_LINEAR_H
