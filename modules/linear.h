// Linear: y = x W^T + b, Transformer-Engine style, on cuBLASLt.
//
//   forward    one GEMM; the bias is added in its epilogue (no separate bias kernel), and
//              optionally a residual r is added too: y = x W^T + b + r (beta = 1)
//   backward   dx = dy W                    one GEMM
//              dW = dy^T x, db = sum_t dy   one GEMM: the bias gradient comes out of its
//                                           epilogue (BGRADB), not from a reduction kernel
//
// Row-major shapes: x [tokens, in], W [out, in] (PyTorch's layout), y [tokens, out].
// The module owns W, b and their gradients (device, in the layer's dtype), and its state: it
// does not copy x, but every forward records where x is, and the wgrad reads it from there
// (so x must stay unchanged until the backward).
#ifndef MODULES_LINEAR_H
#define MODULES_LINEAR_H

#include <stdint.h>

#include "common/core/layer.h"
#include "modules/gemm.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int in, out;
    DType dtype;
    void *weight, *bias;    // [out, in], [out]
    void *dweight, *dbias;  // gradients, overwritten by each backward
    const void *saved_x;    // the input of the last forward (set by the forwards below only)
} Linear;

// Uploads the host weight [out, in] and bias [out] (bias may be NULL: no bias).
void linear_init(Linear *l, int in, int out, const float *weight, const float *bias, DType dtype);
void linear_free(Linear *l);
// y = x W^T + b (+ residual if not NULL; residual may alias y).
void linear_forward(Linear *l, const void *x, void *y, int64_t tokens, const void *residual);
// y = x W^T without the bias, which is returned (device, [out]) for the caller to add in a
// fused pass that follows (bias + dropout + residual): TE's Linear(return_bias=True).
const void *linear_forward_return_bias(Linear *l, const void *x, void *y, int64_t tokens);
// y = GELU(x W^T + b) in one GEMM (GELU and the bias in its epilogue); the pre-activation
// x W^T + b [tokens, out] is written to pre_gelu for the backward (LayerNormMLP's FC1).
void linear_forward_gelu(Linear *l, const void *x, void *y, void *pre_gelu, int64_t tokens);
// dx = dy W (skipped if dx is NULL); dW and db from dy and the saved x.
void linear_backward(Linear *l, const void *dy, void *dx, int64_t tokens);
// Copies dW and db (if there is a bias) to host floats.
void linear_read_grads(const Linear *l, float *dweight, float *dbias);
// New values for W and b (host floats, rounded to the module's dtype), e.g. after an optimizer
// step on float master weights.
void linear_load_params(Linear *l, const float *weight, const float *bias);

// The backward's two products apart, for callers that run something between them (step 07
// starts an all-reduce of dx before the wgrad) or fuse into the dgrad (LayerNormMLP):
// dgrad: dx [tokens, in] = dy W.
void linear_dgrad(const Linear *l, const void *dy, void *dx, int64_t tokens);
// dgrad with an epilogue on dx: GEMM_EPILOGUE_DGELU (dx *= GELU'(aux), aux [tokens, in] the
// pre-activation the GELU before this Linear saved) or GEMM_EPILOGUE_DGELU_BGRAD (the same,
// and bias_grad [in] = the column sums of dx: the preceding Linear's bias gradient).
void linear_dgrad_epilogue(const Linear *l, const void *dy, void *dx, int64_t tokens, GemmEpilogue epilogue,
                           void *bias_grad, void *aux);
// wgrad: dW [out, in] = dy^T x, x the last forward's input; with bias_grad (and a bias) also
// db = the sum over tokens of dy, in the same GEMM's epilogue (BGRADB). bias_grad = 0 when
// an earlier epilogue summed db already (GEMM_EPILOGUE_DGELU_BGRAD). Dies before a forward.
void linear_wgrad(const Linear *l, const void *dy, int64_t tokens, int bias_grad);

#ifdef __cplusplus
}
#endif

#endif  // MODULES_LINEAR_H
