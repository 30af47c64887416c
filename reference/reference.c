// The CPU reference: the layer in plain C, one loop nest per formula.
//
// Storage is float32; every sum is accumulated in double, so the reference's own rounding
// error is far below that of any GPU step (which stores fp16/bf16): it is the ground truth.
#include "reference/reference.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/errors.h"
#include "common/core/philox.h"

// ---- LayerNorm ------------------------------------------------------------------------------
void ref_layernorm_forward(const float *x, const float *gamma, const float *beta, int64_t rows,
                           int cols, float eps, float *y, float *mean, float *rstd) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        double sum = 0.0;
        for (int c = 0; c < cols; c++) sum += xr[c];
        double mu = sum / cols;
        double var = 0.0;  // biased variance, as torch.nn.LayerNorm
        for (int c = 0; c < cols; c++) var += (xr[c] - mu) * (xr[c] - mu);
        var /= cols;
        double rs = 1.0 / sqrt(var + eps);
        for (int c = 0; c < cols; c++) y[r * cols + c] = (float)((xr[c] - mu) * rs * gamma[c] + beta[c]);
        mean[r] = (float)mu;
        rstd[r] = (float)rs;
    }
}

// ref_layernorm_backward is the graded exercise "layernorm_backward" (exercises/layernorm_backward.c
// is its stub; docs/exercises.md).

// ---- Linear ---------------------------------------------------------------------------------
void ref_linear_forward(const float *x, const float *w, const float *b, int64_t rows, int in,
                        int out, float *y) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * in;
        for (int o = 0; o < out; o++) {
            const float *wo = w + (int64_t)o * in;  // row o of W: contiguous, like xr
            double acc = b ? b[o] : 0.0;
            for (int i = 0; i < in; i++) acc += (double)xr[i] * wo[i];
            y[r * out + o] = (float)acc;
        }
    }
}

// dx = dy W,  dW = dy^T x,  db = sum_rows dy
void ref_linear_backward(const float *dy, const float *x, const float *w, int64_t rows, int in,
                         int out, float *dx, float *dw, float *db) {
    double *acc = xmalloc((size_t)in * sizeof(double));
    for (int64_t r = 0; r < rows; r++) {  // dx: row r is a combination of W's rows
        const float *dyr = dy + r * out;
        for (int i = 0; i < in; i++) acc[i] = 0.0;
        for (int o = 0; o < out; o++) {
            const float *wo = w + (int64_t)o * in;
            double g = dyr[o];
            for (int i = 0; i < in; i++) acc[i] += g * wo[i];
        }
        for (int i = 0; i < in; i++) dx[r * in + i] = (float)acc[i];
    }
    for (int o = 0; o < out; o++) {  // dW: row o sums dy[:, o] times x's rows
        for (int i = 0; i < in; i++) acc[i] = 0.0;
        double bias_grad = 0.0;
        for (int64_t r = 0; r < rows; r++) {
            double g = dy[r * out + o];
            const float *xr = x + r * in;
            for (int i = 0; i < in; i++) acc[i] += g * xr[i];
            bias_grad += g;
        }
        for (int i = 0; i < in; i++) dw[(int64_t)o * in + i] = (float)acc[i];
        if (db) db[o] = (float)bias_grad;
    }
    free(acc);
}

// ---- GELU (tanh approximation) ------------------------------------------------------------
static const double GELU_K = 0.7978845608028654;  // sqrt(2 / pi)
static const double GELU_C = 0.044715;

void ref_gelu_forward(const float *x, int64_t n, float *y) {
    for (int64_t i = 0; i < n; i++) {
        double v = x[i];
        y[i] = (float)(0.5 * v * (1.0 + tanh(GELU_K * (v + GELU_C * v * v * v))));
    }
}

// d/dx [0.5 x (1 + tanh(u))] = 0.5 (1 + tanh(u)) + 0.5 x (1 - tanh(u)^2) du/dx,
// with u = k (x + c x^3), du/dx = k (1 + 3 c x^2).
void ref_gelu_backward(const float *dy, const float *x, int64_t n, float *dx) {
    for (int64_t i = 0; i < n; i++) {
        double v = x[i];
        double t = tanh(GELU_K * (v + GELU_C * v * v * v));
        double d = 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * GELU_K * (1.0 + 3.0 * GELU_C * v * v);
        dx[i] = (float)(dy[i] * d);
    }
}

// ---- Dropout --------------------------------------------------------------------------------
void ref_dropout_forward(const float *x, int64_t n, float p, uint64_t seed, uint64_t offset,
                         float *y) {
    double scale = dropout_keep_scale(p);
    for (int64_t i = 0; i < n; i++)
        y[i] = (p > 0.0f && !dropout_keep(seed, offset, (uint64_t)i, p)) ? 0.0f : (float)(x[i] * (p > 0.0f ? scale : 1.0));
}

// Dropout is linear: its backward applies the same mask and scale to the gradient.
void ref_dropout_backward(const float *dy, int64_t n, float p, uint64_t seed, uint64_t offset,
                          float *dx) {
    ref_dropout_forward(dy, n, p, seed, offset, dx);
}

// ---- Attention on the fused QKV layout ----------------------------------------------------
// Element t of head h's q for token (s, b) is qkv[((s * batch + b) * heads + h) * 3d + t];
// k is at + d, v at + 2d. ctx[((s * batch + b) * heads + h) * d + t].
static inline int64_t qkv_index(int s, int b, int h, int part, int t, int batch, int heads, int d) {
    return (((int64_t)s * batch + b) * heads + h) * 3 * d + (int64_t)part * d + t;
}

static inline int64_t ctx_index(int s, int b, int h, int t, int batch, int heads, int d) {
    return (((int64_t)s * batch + b) * heads + h) * d + t;
}

// The number of probability (b, h, i, j) that its dropout mask is keyed by (attention's
// numbering, common/core/philox.h).
static inline uint64_t attn_prob_index(int b, int h, int i, int j, int heads, int seq) {
    return attention_dropout_index((uint64_t)b * heads + h, i, j, seq);
}

void ref_attention_forward(const float *qkv, int seq, int batch, int heads, int head_dim,
                           float p_drop, int causal, uint64_t seed, uint64_t offset, float *ctx,
                           float *probs) {
    ref_attention_forward_heads(qkv, seq, batch, heads, head_dim, 0, heads, p_drop, causal, seed,
                                offset, ctx, probs);
}

void ref_attention_forward_heads(const float *qkv, int seq, int batch, int heads, int head_dim,
                                 int head_offset, int total_heads, float p_drop, int causal,
                                 uint64_t seed, uint64_t offset, float *ctx, float *probs) {
    const int d = head_dim;
    const double scale = 1.0 / sqrt((double)d);
    const double keep_scale = dropout_keep_scale(p_drop);
    double *row = xmalloc((size_t)seq * sizeof(double));
    for (int b = 0; b < batch; b++) {
        for (int h = 0; h < heads; h++) {
            for (int i = 0; i < seq; i++) {
                // Scores of query i against every key, then a numerically safe softmax.
                int last = causal ? i : seq - 1;
                double max = -INFINITY;
                for (int j = 0; j <= last; j++) {
                    double s = 0.0;
                    for (int t = 0; t < d; t++)
                        s += (double)qkv[qkv_index(i, b, h, 0, t, batch, heads, d)] *
                             qkv[qkv_index(j, b, h, 1, t, batch, heads, d)];
                    row[j] = s * scale;
                    if (row[j] > max) max = row[j];
                }
                double sum = 0.0;
                for (int j = 0; j <= last; j++) {
                    row[j] = exp(row[j] - max);
                    sum += row[j];
                }
                for (int j = 0; j < seq; j++) row[j] = j <= last ? row[j] / sum : 0.0;
                if (probs) {
                    float *pr = probs + (((int64_t)b * heads + h) * seq + i) * seq;
                    for (int j = 0; j < seq; j++) pr[j] = (float)row[j];
                }
                // Dropout on the probabilities, then ctx = P v.
                for (int j = 0; j <= last; j++) {
                    if (p_drop > 0.0f)
                        row[j] = dropout_keep(seed, offset, attn_prob_index(b, head_offset + h, i, j, total_heads, seq), p_drop)
                                     ? row[j] * keep_scale : 0.0;
                }
                for (int t = 0; t < d; t++) {
                    double acc = 0.0;
                    for (int j = 0; j <= last; j++) acc += row[j] * qkv[qkv_index(j, b, h, 2, t, batch, heads, d)];
                    ctx[ctx_index(i, b, h, t, batch, heads, d)] = (float)acc;
                }
            }
        }
    }
    free(row);
}

// With P the probabilities, M the dropout mask scaled by 1/(1-p) and O = (P * M) V:
//   dV = (P * M)^T dO,   dP = (dO V^T) * M,   dS = P * (dP - rowsum(dP * P)),
//   dQ = dS K * scale,   dK = dS^T Q * scale.
void ref_attention_backward(const float *dctx, const float *qkv, const float *probs, int seq,
                            int batch, int heads, int head_dim, float p_drop, int causal,
                            uint64_t seed, uint64_t offset, float *dqkv) {
    ref_attention_backward_heads(dctx, qkv, probs, seq, batch, heads, head_dim, 0, heads, p_drop,
                                 causal, seed, offset, dqkv);
}

void ref_attention_backward_heads(const float *dctx, const float *qkv, const float *probs,
                                  int seq, int batch, int heads, int head_dim, int head_offset,
                                  int total_heads, float p_drop, int causal, uint64_t seed,
                                  uint64_t offset, float *dqkv) {
    const int d = head_dim;
    const double scale = 1.0 / sqrt((double)d);
    const double keep_scale = dropout_keep_scale(p_drop);
    double *pd = xmalloc((size_t)seq * sizeof(double));  // dropped probabilities of one row
    double *dp = xmalloc((size_t)seq * sizeof(double));  // gradient of one row of P
    int64_t total = (int64_t)seq * batch * heads * 3 * d;
    memset(dqkv, 0, (size_t)total * sizeof(float));
    double *acc = xcalloc((size_t)total, sizeof(double));  // accumulate dq, dk, dv in double
    for (int b = 0; b < batch; b++) {
        for (int h = 0; h < heads; h++) {
            for (int i = 0; i < seq; i++) {
                const float *pr = probs + (((int64_t)b * heads + h) * seq + i) * seq;
                int last = causal ? i : seq - 1;
                for (int j = 0; j <= last; j++) {
                    double m = 1.0;
                    if (p_drop > 0.0f)
                        m = dropout_keep(seed, offset, attn_prob_index(b, head_offset + h, i, j, total_heads, seq), p_drop) ? keep_scale : 0.0;
                    pd[j] = pr[j] * m;
                    double g = 0.0;  // dO_i . v_j
                    for (int t = 0; t < d; t++)
                        g += (double)dctx[ctx_index(i, b, h, t, batch, heads, d)] *
                             qkv[qkv_index(j, b, h, 2, t, batch, heads, d)];
                    dp[j] = g * m;
                    for (int t = 0; t < d; t++)  // dV_j += pd_ij dO_i
                        acc[qkv_index(j, b, h, 2, t, batch, heads, d)] +=
                            pd[j] * dctx[ctx_index(i, b, h, t, batch, heads, d)];
                }
                double dot = 0.0;
                for (int j = 0; j <= last; j++) dot += dp[j] * pr[j];
                for (int j = 0; j <= last; j++) {
                    double ds = pr[j] * (dp[j] - dot) * scale;
                    for (int t = 0; t < d; t++) {
                        acc[qkv_index(i, b, h, 0, t, batch, heads, d)] += ds * qkv[qkv_index(j, b, h, 1, t, batch, heads, d)];
                        acc[qkv_index(j, b, h, 1, t, batch, heads, d)] += ds * qkv[qkv_index(i, b, h, 0, t, batch, heads, d)];
                    }
                }
            }
        }
    }
    for (int64_t k = 0; k < total; k++) dqkv[k] = (float)acc[k];
    free(acc);
    free(pd);
    free(dp);
}

// ---- Linears, exact or with rounded operands --------------------------------------------------
static float *quantized_copy(const RefQuantizer *q, const float *x, int64_t n, int is_gradient) {
    float *c = xmalloc((size_t)n * sizeof(float));
    memcpy(c, x, (size_t)n * sizeof(float));
    q->quantize(q, c, n, is_gradient);
    return c;
}

void ref_linear_forward_quantized(const RefQuantizer *q, const float *x, const float *w, const float *b, int64_t rows,
                             int in, int out, float *y) {
    if (!q || !q->quantize) {
        ref_linear_forward(x, w, b, rows, in, out, y);
        return;
    }
    float *xq = quantized_copy(q, x, rows * in, 0), *wq = quantized_copy(q, w, (int64_t)in * out, 0);
    ref_linear_forward(xq, wq, b, rows, in, out, y);
    free(xq);
    free(wq);
}

// dw[o, i] = sum_rows |dy[r, o]| |x[r, i]|, db[o] = sum_rows |dy[r, o]| (db may be NULL); the
// loops of ref_linear_backward's dW.
static void linear_grad_magnitudes(const float *dy, const float *x, int64_t rows, int in, int out, float *dw,
                                   float *db) {
    double *acc = xmalloc((size_t)in * sizeof(double));
    for (int o = 0; o < out; o++) {
        for (int i = 0; i < in; i++) acc[i] = 0.0;
        double bias = 0.0;
        for (int64_t r = 0; r < rows; r++) {
            const double g = fabs((double)dy[r * out + o]);
            const float *xr = x + r * in;
            for (int i = 0; i < in; i++) acc[i] += g * fabs((double)xr[i]);
            bias += g;
        }
        for (int i = 0; i < in; i++) dw[(int64_t)o * in + i] = (float)acc[i];
        if (db) db[o] = (float)bias;
    }
    free(acc);
}

void ref_linear_backward_quantized(const RefQuantizer *q, const float *dy, const float *x, const float *w, int64_t rows,
                              int in, int out, float *dx, float *dw, float *db) {
    if (q && q->grad_magnitudes) {
        ref_linear_backward(dy, x, w, rows, in, out, dx, dw, db);
        linear_grad_magnitudes(dy, x, rows, in, out, dw, db);
        return;
    }
    if (!q || !q->quantize) {
        ref_linear_backward(dy, x, w, rows, in, out, dx, dw, db);
        return;
    }
    float *xq = quantized_copy(q, x, rows * in, 0), *wq = quantized_copy(q, w, (int64_t)in * out, 0);
    float *dyq = quantized_copy(q, dy, rows * out, 1);
    ref_linear_backward(dyq, xq, wq, rows, in, out, dx, dw, NULL);
    for (int o = 0; o < out; o++) {  // the bias gradient from the unrounded dy
        double s = 0.0;
        for (int64_t r = 0; r < rows; r++) s += dy[r * out + o];
        db[o] = (float)s;
    }
    free(xq);
    free(wq);
    free(dyq);
}

void ref_layernorm_backward_quantized(const RefQuantizer *q, const float *dy, const float *x, const float *gamma,
                                      const float *mean, const float *rstd, int64_t rows, int cols, float *dx,
                                      float *dgamma, float *dbeta) {
    ref_layernorm_backward(dy, x, gamma, mean, rstd, rows, cols, dx, dgamma, dbeta);
    if (!q || !q->grad_magnitudes) return;
    for (int c = 0; c < cols; c++) {
        double sg = 0.0, sb = 0.0;
        for (int64_t r = 0; r < rows; r++) {
            double xhat = (x[r * cols + c] - mean[r]) * (double)rstd[r];
            sg += fabs(dy[r * cols + c] * xhat);
            sb += fabs((double)dy[r * cols + c]);
        }
        dgamma[c] = (float)sg;
        dbeta[c] = (float)sb;
    }
}

RefQuantizer ref_grad_magnitudes(void) {
    RefQuantizer q = {.grad_magnitudes = 1};
    return q;
}

// ---- Rounding where the GPU stores -----------------------------------------------------------
void ref_store(const RefQuantizer *q, const char *name, float *x, int64_t n) {
    if (q && q->store) q->store(q, name, x, n);
}

static void store_rounded(const RefQuantizer *q, const char *name, float *x, int64_t n) {
    (void)name;
    round_to_dtype(x, n, *(const DType *)q->ctx);
}

RefQuantizer ref_rounding_to_dtype(const DType *dtype) {
    RefQuantizer q = {.store = store_rounded, .ctx = dtype};
    return q;
}

// Every parameter gradient through the store hook, as "grad.<name>".
static void store_param_grads(const RefQuantizer *q, const LayerConfig *c, LayerParams *g) {
    if (!q || !q->store) return;
    for (int i = 0; i < NUM_PARAMS; i++) {
        char name[64];
        snprintf(name, sizeof name, "grad.%s", PARAM_NAMES[i]);
        q->store(q, name, g->tensor[i], param_numel(c, i));
    }
}

// ---- The whole layer ----------------------------------------------------------------------
// Everything the forward keeps for the backward.
typedef struct {
    float *ln1_out, *ln1_mean, *ln1_rstd;  // a = LN1(x)
    float *qkv, *probs, *ctx;              // attention
    float *proj;                           // ctx W_proj^T + b_proj, before dropout
    float *y;                              // x + dropout(proj)
    float *ln2_out, *ln2_mean, *ln2_rstd;  // LN2(y)
    float *fc1, *gelu;                     // FC1 output and GELU(FC1)
} Saved;

static void saved_alloc(const LayerConfig *c, Saved *s) {
    size_t t = (size_t)layer_tokens(c), h = (size_t)c->hidden, f = (size_t)c->ffn;
    s->ln1_out = xmalloc(t * h * sizeof(float));
    s->ln1_mean = xmalloc(t * sizeof(float));
    s->ln1_rstd = xmalloc(t * sizeof(float));
    s->qkv = xmalloc(t * 3 * h * sizeof(float));
    s->probs = xmalloc((size_t)c->batch * c->heads * c->seq * c->seq * sizeof(float));
    s->ctx = xmalloc(t * h * sizeof(float));
    s->proj = xmalloc(t * h * sizeof(float));
    s->y = xmalloc(t * h * sizeof(float));
    s->ln2_out = xmalloc(t * h * sizeof(float));
    s->ln2_mean = xmalloc(t * sizeof(float));
    s->ln2_rstd = xmalloc(t * sizeof(float));
    s->fc1 = xmalloc(t * f * sizeof(float));
    s->gelu = xmalloc(t * f * sizeof(float));
}

static void saved_free(Saved *s) {
    float *all[] = {s->ln1_out, s->ln1_mean, s->ln1_rstd, s->qkv, s->probs, s->ctx, s->proj,
                    s->y, s->ln2_out, s->ln2_mean, s->ln2_rstd, s->fc1, s->gelu};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
}

static void layer_forward(const LayerConfig *c, const LayerParams *p, const float *x, uint64_t step,
                          const RefQuantizer *q, Saved *s, float *out) {
    const int64_t T = layer_tokens(c);
    const int h = c->hidden, f = c->ffn;
    float *const *w = p->tensor;
    ref_layernorm_forward(x, w[P_LN1_WEIGHT], w[P_LN1_BIAS], T, h, c->eps, s->ln1_out, s->ln1_mean, s->ln1_rstd);
    ref_store(q, "ln1_out", s->ln1_out, T * h);
    ref_linear_forward_quantized(q, s->ln1_out, w[P_QKV_WEIGHT], w[P_QKV_BIAS], T, h, 3 * h, s->qkv);
    ref_store(q, "qkv", s->qkv, T * 3 * h);
    if (q && q->attention_forward) q->attention_forward(q, c, s->qkv, s->ctx, s->probs);
    else
        ref_attention_forward(s->qkv, c->seq, c->batch, c->heads, layer_head_dim(c), c->attn_dropout, c->causal,
                              c->seed, dropout_offset(step, DROPOUT_SITE_ATTENTION), s->ctx, s->probs);
    ref_store(q, "ctx", s->ctx, T * h);
    ref_linear_forward_quantized(q, s->ctx, w[P_PROJ_WEIGHT], w[P_PROJ_BIAS], T, h, h, s->proj);
    ref_store(q, "proj", s->proj, T * h);
    ref_dropout_forward(s->proj, T * h, c->hidden_dropout, c->seed, dropout_offset(step, DROPOUT_SITE_HIDDEN), s->y);
    for (int64_t i = 0; i < T * h; i++) s->y[i] += x[i];
    ref_store(q, "y", s->y, T * h);
    ref_layernorm_forward(s->y, w[P_LN2_WEIGHT], w[P_LN2_BIAS], T, h, c->eps, s->ln2_out, s->ln2_mean, s->ln2_rstd);
    ref_store(q, "ln2_out", s->ln2_out, T * h);
    ref_linear_forward_quantized(q, s->ln2_out, w[P_FC1_WEIGHT], w[P_FC1_BIAS], T, h, f, s->fc1);
    ref_store(q, "fc1", s->fc1, T * f);
    ref_gelu_forward(s->fc1, T * f, s->gelu);
    ref_store(q, "gelu", s->gelu, T * f);
    ref_linear_forward_quantized(q, s->gelu, w[P_FC2_WEIGHT], w[P_FC2_BIAS], T, f, h, out);
    for (int64_t i = 0; i < T * h; i++) out[i] += s->y[i];
    ref_store(q, "out", out, T * h);
}

static void layer_backward(const LayerConfig *c, const LayerParams *p, const float *x, uint64_t step,
                           const RefQuantizer *q, const Saved *s, const float *dout, float *dx, LayerParams *g) {
    const int64_t T = layer_tokens(c);
    const int h = c->hidden, f = c->ffn;
    float *const *w = p->tensor;
    float **gw = g->tensor;
    float *d_gelu = xmalloc((size_t)(T * f) * sizeof(float));
    float *d_fc1 = xmalloc((size_t)(T * f) * sizeof(float));
    float *d_ln2 = xmalloc((size_t)(T * h) * sizeof(float));
    float *dy = xmalloc((size_t)(T * h) * sizeof(float));  // gradient reaching y
    float *d_proj = xmalloc((size_t)(T * h) * sizeof(float));
    float *d_ctx = xmalloc((size_t)(T * h) * sizeof(float));
    float *d_qkv = xmalloc((size_t)(T * 3 * h) * sizeof(float));
    float *d_ln1 = xmalloc((size_t)(T * h) * sizeof(float));

    // out = y + FC2(GELU(FC1(LN2(y))))
    ref_linear_backward_quantized(q, dout, s->gelu, w[P_FC2_WEIGHT], T, f, h, d_gelu, gw[P_FC2_WEIGHT], gw[P_FC2_BIAS]);
    ref_store(q, "d_gelu", d_gelu, T * f);
    ref_gelu_backward(d_gelu, s->fc1, T * f, d_fc1);
    ref_store(q, "d_fc1", d_fc1, T * f);
    ref_linear_backward_quantized(q, d_fc1, s->ln2_out, w[P_FC1_WEIGHT], T, h, f, d_ln2, gw[P_FC1_WEIGHT], gw[P_FC1_BIAS]);
    ref_store(q, "d_ln2", d_ln2, T * h);
    ref_layernorm_backward_quantized(q, d_ln2, s->y, w[P_LN2_WEIGHT], s->ln2_mean, s->ln2_rstd, T, h, dy,
                           gw[P_LN2_WEIGHT], gw[P_LN2_BIAS]);
    for (int64_t i = 0; i < T * h; i++) dy[i] += dout[i];  // the residual
    ref_store(q, "d_y", dy, T * h);
    // y = x + dropout(proj)
    ref_dropout_backward(dy, T * h, c->hidden_dropout, c->seed, dropout_offset(step, DROPOUT_SITE_HIDDEN), d_proj);
    ref_store(q, "d_proj", d_proj, T * h);
    ref_linear_backward_quantized(q, d_proj, s->ctx, w[P_PROJ_WEIGHT], T, h, h, d_ctx, gw[P_PROJ_WEIGHT], gw[P_PROJ_BIAS]);
    ref_store(q, "d_ctx", d_ctx, T * h);
    ref_attention_backward(d_ctx, s->qkv, s->probs, c->seq, c->batch, c->heads, layer_head_dim(c),
                           c->attn_dropout, c->causal, c->seed, dropout_offset(step, DROPOUT_SITE_ATTENTION), d_qkv);
    ref_store(q, "d_qkv", d_qkv, T * 3 * h);
    ref_linear_backward_quantized(q, d_qkv, s->ln1_out, w[P_QKV_WEIGHT], T, h, 3 * h, d_ln1, gw[P_QKV_WEIGHT], gw[P_QKV_BIAS]);
    ref_store(q, "d_ln1", d_ln1, T * h);
    ref_layernorm_backward_quantized(q, d_ln1, x, w[P_LN1_WEIGHT], s->ln1_mean, s->ln1_rstd, T, h, dx,
                           gw[P_LN1_WEIGHT], gw[P_LN1_BIAS]);
    for (int64_t i = 0; i < T * h; i++) dx[i] += dy[i];  // the residual
    ref_store(q, "dx", dx, T * h);
    store_param_grads(q, c, g);

    float *tmp[] = {d_gelu, d_fc1, d_ln2, dy, d_proj, d_ctx, d_qkv, d_ln1};
    for (size_t i = 0; i < sizeof tmp / sizeof tmp[0]; i++) free(tmp[i]);
}

void ref_layer_forward(const LayerConfig *cfg, const LayerParams *params, const float *x,
                       uint64_t step, float *out) {
    Saved s;
    saved_alloc(cfg, &s);
    layer_forward(cfg, params, x, step, NULL, &s, out);
    saved_free(&s);
}

void ref_layer_train_step(const LayerConfig *cfg, const LayerParams *params,
                          const LayerInputs *in, uint64_t step, LayerResults *res) {
    Saved s;
    saved_alloc(cfg, &s);
    layer_forward(cfg, params, in->x, step, NULL, &s, res->out);
    layer_backward(cfg, params, in->x, step, NULL, &s, in->dy, res->dx, &res->grad);
    saved_free(&s);
}

void ref_layer_train_step_quantized(const LayerConfig *cfg, const LayerParams *params, const LayerInputs *in,
                                    uint64_t step, const RefQuantizer *q, LayerResults *res) {
    Saved s;
    saved_alloc(cfg, &s);
    layer_forward(cfg, params, in->x, step, q, &s, res->out);
    layer_backward(cfg, params, in->x, step, q, &s, in->dy, res->dx, &res->grad);
    saved_free(&s);
}
