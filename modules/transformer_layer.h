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
    int overlap_wgrad;     // transformer_layer_set_overlap_wgrad's; 0 (init's default): one stream
} TransformerLayer;

// NULL if the layer can run this configuration, else why not.
const char *transformer_layer_unsupported(const LayerConfig *cfg);
void transformer_layer_init(TransformerLayer *t, const LayerConfig *cfg, const LayerParams *params);
void transformer_layer_free(TransformerLayer *t);
// `step` selects the dropout masks (dropout_offset(step, site)).
void transformer_layer_forward(TransformerLayer *t, const void *x, void *out, uint64_t step);
void transformer_layer_backward(TransformerLayer *t, const void *dout, void *dx, uint64_t step);
// Off after transformer_layer_init (step 04 turns it on unless --no-overlap-wgrad). On: the
// MLP's two weight-gradient GEMMs (dW2/db2, dW1/db1) run on a second stream (LayerNormMLP's
// wgrad stream, layernorm_mlp.h) beside FC1's dgrad, LN2's backward, the dropout and
// projection backward, attention's backward and the QKV backward, which go on on the default
// stream (issue 21: serial work that could overlap).
// Every result has the same bits as with one stream (the same GEMM algorithms). The backward
// ends with the default stream waiting for the side stream, so for the caller everything is
// ordered on the default stream as before: the step's end events, read_grads, the next forward.
// Call between steps (off waits for the side stream, then frees it).
void transformer_layer_set_overlap_wgrad(TransformerLayer *t, int on);
// Every parameter's gradient to host floats, in LayerParams order.
void transformer_layer_read_grads(const TransformerLayer *t, LayerParams *grads);
// New parameter values (host floats, LayerParams order).
void transformer_layer_load_params(TransformerLayer *t, const LayerParams *params);

#ifdef __cplusplus
}
#endif

#endif  // MODULES_TRANSFORMER_LAYER_H
