// The parallel layer (GPT-J, GPT-NeoX, PaLM) on the CPU: attention and MLP side by side on
// one LayerNorm, instead of one after the other.
//
//   serial:    y = x + Dropout(Attn(LN1(x)));  out = y + MLP(LN2(y))
//   parallel:  a = LN(x);  out = x + Dropout(Attn(a) + MLP(a))
//
// Dropout is applied once, to the sum of the two branches: that is what lets step 06 add the
// branches inside one GEMM ([ctx | GELU(h1)] @ [W_proj ; W_fc2]^T). The parallel layer uses
// the serial layer's parameter slots: ln1 is the shared LayerNorm, ln2 is unused (its
// gradients are zero), and the two output biases are added (both get the same gradient).
//
// The fused layout stores the same weights as the GEMMs of step 06 see them:
//   W_in  = [W_qkv ; W_fc1]   [3h + ffn, h]   b_in  = [b_qkv ; b_fc1]
//   W_out = [W_proj | W_fc2]  [h, h + ffn]    b_out = b_proj + b_fc2
#ifndef REFERENCE_PARALLEL_REFERENCE_H
#define REFERENCE_PARALLEL_REFERENCE_H

#include "common/core/layer.h"
#include "reference/reference.h"

#ifdef __cplusplus
extern "C" {
#endif

// One training step of the parallel layer (unfused weights, LayerParams slots as above).
void ref_parallel_train_step(const LayerConfig *cfg, const LayerParams *params, const LayerInputs *in,
                             uint64_t step, LayerResults *res);
// The same with rounding where the GPU rounds (see RefQuantizer): the Linears' operands
// (quantize: step 06 in FP8) and the tensors kept between ops (store: --check's noise run).
void ref_parallel_train_step_quantized(const LayerConfig *cfg, const LayerParams *params, const LayerInputs *in,
                                       uint64_t step, const RefQuantizer *q, LayerResults *res);
void ref_parallel_forward(const LayerConfig *cfg, const LayerParams *params, const float *x, uint64_t step,
                          float *out);

typedef struct {
    float *ln_weight, *ln_bias;  // [h]
    float *w_in, *b_in;          // [3h + ffn, h], [3h + ffn]
    float *w_out, *b_out;        // [h, h + ffn], [h]
} FusedParallelParams;

void fused_parallel_alloc(const LayerConfig *cfg, FusedParallelParams *f);
void fused_parallel_free(FusedParallelParams *f);
// Separate -> fused. (The fused b_out is b_proj + b_fc2.)
void fuse_parallel_params(const LayerConfig *cfg, const LayerParams *p, FusedParallelParams *f);
// Fused -> separate. b_out has no unique split: it all goes to b_proj and b_fc2 is zero.
void unfuse_parallel_params(const LayerConfig *cfg, const FusedParallelParams *f, LayerParams *p);

// Gradients in the fused layout -> the separate layout: like unfuse_parallel_params, except
// that b_out's gradient is the gradient of both output biases (they enter as a sum).
void parallel_grads_from_fused(const LayerConfig *cfg, const FusedParallelParams *grad, LayerParams *out);

// The same training step computed the fused way: one input linear with N = 3h + ffn whose
// output is split by views, one output linear with K = h + ffn that sums the branches.
// Gradients come back in the fused layout (grad has the same shapes as params).
void ref_parallel_fused_train_step(const LayerConfig *cfg, const FusedParallelParams *params,
                                   const LayerInputs *in, uint64_t step, float *out, float *dx,
                                   FusedParallelParams *grad);

#ifdef __cplusplus
}
#endif

#endif  // REFERENCE_PARALLEL_REFERENCE_H
