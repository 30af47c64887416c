// LayerNormLinear: y = Linear(LayerNorm(x)) as one module, as in Transformer Engine.
//
// Fused at the module level: the normalised input is kept (the weight gradient needs it)
// and can be handed to the caller, and backward adds the residual branch's gradient inside
// the LayerNorm backward kernel instead of in a separate pass.
#ifndef MODULES_LAYERNORM_LINEAR_H
#define MODULES_LAYERNORM_LINEAR_H

#include "modules/layernorm.h"
#include "modules/linear.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    LayerNorm ln;
    Linear linear;
    void *ln_out;  // [max_tokens, in]: LayerNorm(x), kept for the weight gradient
    void *d_ln_out;
} LayerNormLinear;

// The module's parameters (or their gradients) as host floats, with TE's names:
// layer_norm_weight, layer_norm_bias [in]; weight [out, in]; bias [out] (NULL: none).
typedef struct {
    float *layer_norm_weight, *layer_norm_bias, *weight, *bias;
} LayerNormLinearTensors;

void layernorm_linear_init(LayerNormLinear *m, int in, int out, int64_t max_tokens, float eps,
                           const LayerNormLinearTensors *params, DType dtype);
void layernorm_linear_free(LayerNormLinear *m);
// New parameter values (rounded to the module's dtype), e.g. after an optimizer step.
void layernorm_linear_load_params(LayerNormLinear *m, const LayerNormLinearTensors *params);
// The layer's first LayerNorm and QKV projection (ln1.*, qkv_projection.*) of a whole layer's
// parameters or gradients, as this module's tensors (pointers into p, nothing copied).
LayerNormLinearTensors layernorm_linear_qkv_of_layer(const LayerParams *p);
// The gradients of the last backward, into the host arrays `grads` points to.
void layernorm_linear_read_grads(const LayerNormLinear *m, const LayerNormLinearTensors *grads);
// y = LN(x) W^T + b. Returns LN(x) (owned by the module) for callers that want it.
const void *layernorm_linear_forward(LayerNormLinear *m, const void *x, void *y, int64_t tokens);
// dx = LN'(dy W) + dresidual (dresidual may be NULL or alias dx).
void layernorm_linear_backward(LayerNormLinear *m, const void *dy, const void *dresidual, void *dx,
                               int64_t tokens);

#ifdef __cplusplus
}
#endif

#endif  // MODULES_LAYERNORM_LINEAR_H
