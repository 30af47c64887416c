// Linear in FP8 with delayed scaling (step 05): y = x W^T + b with the products on FP8.
//
//   forward   x -> fp8 E4M3 (and its transpose, kept for the weight gradient), W -> fp8 E4M3
//             (and its transpose, for the input gradient); y = x8 W8^T in one FP8 GEMM
//             with fast accumulation, bias in the epilogue, fp16/bf16 out.
//   backward  dy -> fp8 (E5M2 under HYBRID) and its transpose;
//             dx = dy8 W8 (W's transposed copy), dW = dy8^T x8 (both transposed copies),
//             no fast accumulation; db = column sums of dy, summed by dy's cast.
// The master weight, its gradient and the bias stay in 16 bits (`base`). Each of x, W and dy
// has its scaling state on the GPU (kernels/fp8/fp8_cast.h: scale, scale_inv, amax history);
// every cast records its tensor's amax, and fp8_linear_update_scales() applies the recipe
// after the step - on the GPU, with no host round trip.
#ifndef MODULES_FP8_LINEAR_H
#define MODULES_FP8_LINEAR_H

#include <stdint.h>

#include "common/fp8/fp8_recipe.h"
#include "modules/linear.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    Linear base;
    DelayedScaling recipe;
    Fp8Format fwd_format, bwd_format;
    float *meta_x, *meta_w, *meta_dy;  // device scaling states
    uint8_t *x8, *xt8, *w8, *wt8, *dy8, *dyt8;
    float *dbias_workspace;  // per-tile partial column sums of dy (the bias gradient)
} Fp8Linear;

void fp8_linear_init(Fp8Linear *l, int in, int out, int64_t max_tokens, const float *weight, const float *bias,
                     DType dtype, const DelayedScaling *recipe);
void fp8_linear_free(Fp8Linear *l);
// y = x W^T (+ b if add_bias; the bias gradient is computed either way).
void fp8_linear_forward(Fp8Linear *l, const void *x, void *y, int64_t tokens, int add_bias);
// y = x W^T, and the bias returned (device, [out]) for the caller to add in a fused pass that
// follows: TE's return_bias=True, as linear_forward_return_bias.
const void *fp8_linear_forward_return_bias(Fp8Linear *l, const void *x, void *y, int64_t tokens);
// For a producer that writes this Linear's input in FP8 itself (step 05's LayerNorms): where
// to write it, with which scale, and where to fold its amax. Then fp8_linear_forward_fp8_input.
typedef struct {
    uint8_t *data;  // [tokens, in]
    const float *scale;
    float *amax;
    Fp8Format format;
} Fp8Input;
Fp8Input fp8_linear_input(Fp8Linear *l);
// y = x8 W^T (+ b) with x8 already written through fp8_linear_input(); makes its transposed
// copy (for the weight gradient) from the FP8 codes.
void fp8_linear_forward_fp8_input(Fp8Linear *l, void *y, int64_t tokens, int add_bias);
// y = GELU(pre_activation) W^T (+ b): GELU is applied by the cast to FP8, so its output is
// never written in 16 bits (backward needs only the pre-activation, and the FP8 copies).
void fp8_linear_forward_gelu(Fp8Linear *l, const void *pre_activation, void *y, int64_t tokens, int add_bias);
void fp8_linear_backward(Fp8Linear *l, const void *dy, void *dx, int64_t tokens);
// The same for a Linear whose output feeds a GELU (step 05's FC1): dy = d_gelu_out *
// GELU'(pre_activation), computed by the cast to FP8, so it is never written in 16 bits.
void fp8_linear_backward_dgelu(Fp8Linear *l, const void *d_gelu_out, const void *pre_activation, void *dx,
                               int64_t tokens);
// New values for the 16-bit master weight and bias (host floats); the scaling state carries on.
void fp8_linear_load_params(Fp8Linear *l, const float *weight, const float *bias);
// dW and db of the last backward, as host floats.
void fp8_linear_read_grads(const Fp8Linear *l, float *dweight, float *dbias);
// The delayed-scaling update of x's, W's and dy's scales, after a training step.
void fp8_linear_update_scales(Fp8Linear *l);
// Host copies of the three scales (x, w, dy) used by this step and this step's amaxes (call it
// before fp8_linear_update_scales), for the scaling chart.
void fp8_linear_read_scaling(const Fp8Linear *l, float scale[3], float amax[3]);

// A new scaling state on the GPU (kernels/fp8/fp8_cast.h's layout: scale and scale_inv 1, an
// amax history of history_len zeros), for an FP8 tensor outside a Linear (step 05's
// --fp8-attention: Q, K and V). Free with dev_free.
float *fp8_meta_new(int history_len);

#ifdef __cplusplus
}
#endif

#endif  // MODULES_FP8_LINEAR_H
