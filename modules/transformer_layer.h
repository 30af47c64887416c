// TransformerLayer: the whole GPT layer as one module, as Transformer Engine's
// te.TransformerLayer (options: hidden, ffn, heads, eps, attention and hidden dropout,
// causal - all in LayerConfig).
//
//   qkv = LayerNormLinear(x)                                (LN1 + QKV, bias in the epilogue)
//   ctx = flash attention(qkv)                              (kernels/attention: no s x s scores)
//   y   = x + dropout(ctx W_proj^T + b_proj)                (GEMM, then ONE fused pass)
//   out = y + LayerNormMLP(y)                               (GELU in FC1's epilogue, y added by FC2's)
// Backward mirrors it; the residual gradients are added inside the LayerNorm backward kernels
// and the dropout backward, never in passes of their own.
#ifndef MODULES_TRANSFORMER_LAYER_H
#define MODULES_TRANSFORMER_LAYER_H

#include <stdint.h>

#include "common/core/layer.h"
#include "kernels/attention/attention.h"
#include "modules/layernorm_linear.h"
#include "modules/layernorm_mlp.h"
#include "modules/linear.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    LayerConfig cfg;
    AttentionProblem attn;  // the layer's attention: packed, unsharded
    LayerNormLinear ln_qkv;
    Linear proj;
    LayerNormMLP mlp;
    void *qkv, *ctx, *proj_out, *y;  // activations kept for backward
    float *lse;                       // [batch, heads, seq] from the attention forward
    void *d_y, *d_proj, *d_ctx, *d_qkv;
    void *attn_workspace;  // attention_backward_workspace_bytes(&attn)
} TransformerLayer;

// NULL if the layer can run this configuration, else why not.
const char *transformer_layer_unsupported(const LayerConfig *cfg);
void transformer_layer_init(TransformerLayer *t, const LayerConfig *cfg, const LayerParams *params);
void transformer_layer_free(TransformerLayer *t);
// `step` selects the dropout masks (dropout_offset(step, site)).
void transformer_layer_forward(TransformerLayer *t, const void *x, void *out, uint64_t step);
void transformer_layer_backward(TransformerLayer *t, const void *dout, void *dx, uint64_t step);
// Every parameter's gradient to host floats, in LayerParams order.
void transformer_layer_read_grads(const TransformerLayer *t, LayerParams *grads);
// New parameter values (host floats, LayerParams order).
void transformer_layer_load_params(TransformerLayer *t, const LayerParams *params);

#ifdef __cplusplus
}
#endif

#endif  // MODULES_TRANSFORMER_LAYER_H
