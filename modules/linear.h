// Linear: y = x W^T + b, Transformer-Engine style, on cuBLASLt.
//
//   forward    one GEMM; the bias is added in its epilogue (no separate bias kernel), and
//              optionally a residual r is added too: y = x W^T + b + r (beta = 1)
//   backward   dx = dy W                    one GEMM
//              dW = dy^T x, db = sum_t dy   one GEMM: the bias gradient comes out of its
//                                           epilogue (BGRADB), not from a reduction kernel
// (by default: the A/B switch below moves each epilogue's work into a kernel of its own).
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
    const void *saved_x;    // the input of the last forward (or linear_set_saved_input's)
    void *dbias_workspace;  // fp32 partial sums for bias_grad_columns (a bias and EPILOGUE_BGRAD=kernel at init only)
} Linear;

// ---- A/B switch: each epilogue in the GEMM or in a kernel of its own (issue 21) ----------------
// cuBLASLt's epilogues save a pass over memory but can slow the GEMM they ride on (Nsight
// Compute on the H200: the BGRADB wgrads ~1.24 ms, the DGELU dgrad 1.89 ms, each slower than
// the plain GEMM). Per kind of epilogue, where its work runs:
//   EPILOGUE_BIAS=gemm|kernel   a forward's bias (BIAS): in the GEMM, or bias_add_rows after it
//   EPILOGUE_GELU=gemm|kernel   FC1's bias + GELU, keeping the pre-activation (GELU_AUX_BIAS),
//                               or a plain GEMM into the pre-activation, then bias_gelu_forward
//   EPILOGUE_DGELU=gemm|kernel  GELU' in FC2's dgrad (DGELU), or gelu_backward_strided after a
//                               plain dgrad (LayerNormMLP's GELU_BACKWARD_SEPARATE_PASS)
//   EPILOGUE_BGRAD=gemm|kernel  the bias gradient in the wgrad (BGRADB), or bias_grad_columns
//                               (kernels/fused/bias_epilogue.h) after a plain wgrad
// The environment is read once, at the first question; unset means gemm (today's choice). Any
// other value stops the program with a message. Honoured by Linear, LayerNormLinear,
// LayerNormMLP and TransformerLayer, i.e. steps 02, 03, 04 and 06 (not the FP8 modules).
// Each setting computes the same result up to rounding; //modules:epilogue_bench times both
// ways per GEMM.
typedef enum { EPILOGUE_KIND_BIAS, EPILOGUE_KIND_GELU, EPILOGUE_KIND_DGELU, EPILOGUE_KIND_BGRAD, EPILOGUE_KINDS } EpilogueKind;
typedef enum { EPILOGUE_IN_GEMM, EPILOGUE_IN_KERNEL } EpiloguePlace;
// Where `kind` runs now: what linear_set_epilogue_place set, else the environment's.
EpiloguePlace linear_epilogue_place(EpilogueKind kind);
// For tests and benches: place >= 0 overrides the environment for `kind` in this process;
// -1 returns it to the environment's setting. A LayerNormMLP reads the DGELU place at init,
// a Linear with a bias the BGRAD place (kernel: it holds the kernel's workspace; a wgrad
// that finds BGRAD moved to kernel after init stops with a message).
void linear_set_epilogue_place(EpilogueKind kind, int place);
// Checks the four variables' values now, and GEMM_AUTOTUNE's (gemm.h) (stops with the message
// above on a bad one), so that
// the steps refuse a bad value before they look for a GPU, as a bad flag; their note comes
// where they are first used.
void linear_require_valid_switches(void);
// "gemm" or "kernel"; the environment variable's name of a kind ("EPILOGUE_BGRAD").
const char *epilogue_place_name(EpiloguePlace place);
const char *epilogue_kind_variable(EpilogueKind kind);

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
// linear_wgrad on `where`'s stream with its own cuBLASLt workspace (gemm.h's GemmStream;
// NULL: exactly linear_wgrad, on the default stream). Everything the wgrad launches goes
// there: the GEMM and, under EPILOGUE_BGRAD=kernel, the bias-gradient kernel (with this
// Linear's own dbias_workspace). Same algorithm, same bits as on the default stream. The call
// only enqueues; the caller must order it (cudaStreamWaitEvent) after the work that writes dy
// and the saved x, keep both unchanged until it has finished, and make every reader of
// dweight/dbias (read_grads, an optimizer) wait for it (LayerNormMLP's wgrad side stream).
void linear_wgrad_on(const Linear *l, const void *dy, int64_t tokens, int bias_grad, const GemmStream *where);
// Activation recomputation: the input the next wgrad reads was computed again into x [tokens,
// in] (the same values as the last forward's input, which was not kept).
void linear_set_saved_input(Linear *l, const void *x);

#ifdef __cplusplus
}
#endif

#endif  // MODULES_LINEAR_H
