// The CPU reference: the whole layer, forward and backward, in plain textbook C.
//
// This is the ground truth every GPU step is checked against. It favours clarity over
// speed: float32 storage, double accumulation, one loop nest per formula. Each op has a
// forward and a backward function so that single GPU kernels can be tested against it
// too. All tensors are row-major float arrays.
#ifndef REFERENCE_REFERENCE_H
#define REFERENCE_REFERENCE_H

#include <stdint.h>

#include "common/core/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

// ---- LayerNorm over the last axis: y = (x - mean) * rstd * gamma + beta ----------------
// mean and rstd (= 1 / sqrt(var + eps), biased variance) are saved per row for backward.
void ref_layernorm_forward(const float *x, const float *gamma, const float *beta, int64_t rows,
                           int cols, float eps, float *y, float *mean, float *rstd);
// Overwrites dx, dgamma and dbeta.
void ref_layernorm_backward(const float *dy, const float *x, const float *gamma, const float *mean,
                            const float *rstd, int64_t rows, int cols, float *dx, float *dgamma,
                            float *dbeta);

// ---- Linear: y[rows, out] = x[rows, in] @ w[out, in]^T + b[out] (b may be NULL) ---------
void ref_linear_forward(const float *x, const float *w, const float *b, int64_t rows, int in,
                        int out, float *y);
// Overwrites dx[rows, in], dw[out, in] and db[out] (db may be NULL).
void ref_linear_backward(const float *dy, const float *x, const float *w, int64_t rows, int in,
                         int out, float *dx, float *dw, float *db);

// ---- GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) ---------
void ref_gelu_forward(const float *x, int64_t n, float *y);
void ref_gelu_backward(const float *dy, const float *x, int64_t n, float *dx);

// ---- Dropout with the Philox mask of common/core/philox.h: y = keep ? x / (1 - p) : 0 -------
// Element i of the array is keyed by its flat index i; p is the drop probability as drawn, a
// multiple of 1/256 (common/core/philox.h), so the scale is dropout_keep_scale(p).
void ref_dropout_forward(const float *x, int64_t n, float p, uint64_t seed, uint64_t offset,
                         float *y);
void ref_dropout_backward(const float *dy, int64_t n, float p, uint64_t seed, uint64_t offset,
                          float *dx);

// ---- Attention on the fused QKV layout ------------------------------------------------
// qkv is [seq, batch, heads, 3*d] with each head's 3*d values split [q | k | v];
// ctx is [seq, batch, heads, d] (= [seq, batch, hidden]).
// probs, if not NULL, receives the softmax probabilities before dropout, [batch, heads,
// seq, seq]: backward needs them. The dropout mask of probability (b, h, i, j) is keyed by
// attention_dropout_index(b * heads + h, i, j, seq) (common/core/philox.h). causal: key j > query
// i is masked.
void ref_attention_forward(const float *qkv, int seq, int batch, int heads, int head_dim,
                           float p_drop, int causal, uint64_t seed, uint64_t offset, float *ctx,
                           float *probs);
// dqkv (same layout as qkv) is overwritten. probs: as saved by the forward.
void ref_attention_backward(const float *dctx, const float *qkv, const float *probs, int seq,
                            int batch, int heads, int head_dim, float p_drop, int causal,
                            uint64_t seed, uint64_t offset, float *dqkv);

// The same two on a contiguous group of `heads` heads, [head_offset, head_offset + heads),
// of a layer with total_heads heads: a tensor-parallel rank's share (qkv, ctx and probs
// hold just those heads). Only the dropout mask depends on where the group sits: the
// probability (b, h, i, j) of local head h is keyed by the GLOBAL head head_offset + h, so
// the ranks together draw exactly the masks of the unsharded layer.
void ref_attention_forward_heads(const float *qkv, int seq, int batch, int heads, int head_dim,
                                 int head_offset, int total_heads, float p_drop, int causal,
                                 uint64_t seed, uint64_t offset, float *ctx, float *probs);
void ref_attention_backward_heads(const float *dctx, const float *qkv, const float *probs,
                                  int seq, int batch, int heads, int head_dim, int head_offset,
                                  int total_heads, float p_drop, int causal, uint64_t seed,
                                  uint64_t offset, float *dqkv);

// ---- The whole layer --------------------------------------------------------------------
// One training step: forward from in->x, backward from in->dy; fills res->out, res->dx and
// every parameter gradient. `step` selects the dropout masks (dropout_offset(step, site)).
void ref_layer_train_step(const LayerConfig *cfg, const LayerParams *params,
                          const LayerInputs *in, uint64_t step, LayerResults *res);

// The same training step with rounding where a GPU rounds. Hooks, each optional:
//   quantize: applied to a copy of each Linear's input and weight (is_gradient 0) before its
//     products, and to each Linear's output gradient (is_gradient 1) before the input- and
//     weight-gradient products; bias gradients use the unrounded gradient. An FP8 step's
//     casts (step 05: steps/driver/fp8_step.h).
//   store: applied in place to every tensor the layer keeps between its ops, as the GPU
//     stores them in its 16-bit dtype: the activations (names "ln1_out", "qkv", "ctx",
//     "proj", "y", "ln2_out", "fc1", "gelu", "out"), the gradients between ops ("d_gelu",
//     "d_fc1", "d_ln2", "d_y", "d_proj", "d_ctx", "d_qkv", "d_ln1", "dx") and the parameter
//     gradients ("grad.<name>"). What --check measures the dtype's rounding noise with
//     (ref_rounding_to_dtype); the attention's internal probabilities are not rounded.
//   grad_magnitudes: 1 makes the run a magnitude run (ref_grad_magnitudes): out and dx as
//     usual, but every parameter gradient is replaced, element-wise, by the sum over tokens
//     of the absolute values of the terms it sums - sum_t |dy_t,o| |x_t,i| for a Linear's
//     weight, sum_t |dy_t,o| for its bias, sum_t |dy_t,c| |xhat_t,c| and sum_t |dy_t,c| for a
//     LayerNorm's gamma and beta - from the exact (unrounded) operands. The scale that the
//     rounding error of each sum is bounded by (--check's rule, common/core/tolerance.h).
//   attention_forward: computes the attention forward in place of ref_attention_forward:
//     ctx [seq, batch, hidden] and the probabilities the backward then uses, probs [batch,
//     heads, seq, seq], from qkv (layouts as ref_attention_forward's). For an attention that
//     rounds (step 05's --fp8-attention, emulated in tests/fp8/fp8_check_tolerance_test.c).
//     The serial layer's reference only (ref_layer_train_step_quantized).
typedef struct RefQuantizer {
    void (*quantize)(const struct RefQuantizer *q, float *x, int64_t n, int is_gradient);
    const void *ctx;
    void (*store)(const struct RefQuantizer *q, const char *name, float *x, int64_t n);
    int grad_magnitudes;
    void (*attention_forward)(const struct RefQuantizer *q, const LayerConfig *cfg, const float *qkv, float *ctx,
                              float *probs);
} RefQuantizer;

// The RefQuantizer of a magnitude run: grad_magnitudes 1, no rounding.
RefQuantizer ref_grad_magnitudes(void);

// A RefQuantizer whose store rounds to *dtype (round_to_dtype) and that has no quantize.
RefQuantizer ref_rounding_to_dtype(const DType *dtype);
// q->store(q, name, x, n) when q and its store hook are there; for the references' code.
void ref_store(const RefQuantizer *q, const char *name, float *x, int64_t n);

void ref_layer_train_step_quantized(const LayerConfig *cfg, const LayerParams *params, const LayerInputs *in,
                                    uint64_t step, const RefQuantizer *q, LayerResults *res);

// Its Linears, for the references of other layers in FP8 (step 06): ref_linear_forward and
// ref_linear_backward on rounded copies of the operands; q NULL or without quantize: exact.
void ref_linear_forward_quantized(const RefQuantizer *q, const float *x, const float *w, const float *b,
                                  int64_t rows, int in, int out, float *y);
void ref_linear_backward_quantized(const RefQuantizer *q, const float *dy, const float *x, const float *w,
                                   int64_t rows, int in, int out, float *dx, float *dw, float *db);
// ref_layernorm_backward for the layers' references: with q->grad_magnitudes, dgamma and dbeta
// are the magnitudes described at RefQuantizer (dx is exact either way); q may be NULL.
void ref_layernorm_backward_quantized(const RefQuantizer *q, const float *dy, const float *x, const float *gamma,
                                      const float *mean, const float *rstd, int64_t rows, int cols, float *dx,
                                      float *dgamma, float *dbeta);

// Forward only (out = layer(x)); for finite-difference checks and loss curves.
void ref_layer_forward(const LayerConfig *cfg, const LayerParams *params, const float *x,
                       uint64_t step, float *out);

#ifdef __cplusplus
}
#endif

#endif  // REFERENCE_REFERENCE_H
