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

void layernorm_linear_init(LayerNormLinear *m, int in, int out, int64_t max_tokens, float eps,
                           const float *gamma, const float *beta, const float *weight,
                           const float *bias, DType dtype);
void layernorm_linear_free(LayerNormLinear *m);
// y = LN(x) W^T + b. Returns LN(x) (owned by the module) for callers that want it.
const void *layernorm_linear_forward(LayerNormLinear *m, const void *x, void *y, int64_t tokens);
// dx = LN'(dy W) + dresidual (dresidual may be NULL or alias dx).
void layernorm_linear_backward(LayerNormLinear *m, const void *dy, const void *dresidual, void *dx,
                               int64_t tokens);

#ifdef __cplusplus
}
#endif

#endif  // MODULES_LAYERNORM_LINEAR_H
