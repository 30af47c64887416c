// Step 01: the naive GPU port.
//
// The layer exactly as eager PyTorch runs it (the quickstart's BasicTransformerLayer):
// every op is its own kernel launch and every intermediate tensor makes a round trip
// through device memory. Linears are cuBLAS products with fp32 accumulation followed by a
// separate bias kernel; attention materialises the [seq, seq] matrices
// (kernels/naive/naive_attention.h). Later steps fuse what this one keeps apart.
//
//   forward                                  backward (in reverse)
//   a    = LN1(x)                            dx  = LN1'(dqkv W_qkv) + d_y
//   qkv  = a W_qkv^T + b_qkv                 dqkv = attention'(dctx)
//   ctx  = attention(qkv)                    dctx = dproj W_proj
//   proj = ctx W_proj^T + b_proj             dproj = dropout'(d_y)
//   y    = x + dropout(proj)                 d_y = LN2'(dln2) + dout
//   h1   = LN2(y) W_fc1^T + b_fc1            dln2 = dh1 W_fc1,  dh1 = GELU'(dgelu)
//   out  = y + GELU(h1) W_fc2^T + b_fc2      dgelu = dout W_fc2
// (dout: the gradient reaching the layer's output, which the README and the files call dy;
// d_y: the gradient reaching y.)
#include <stdlib.h>
#include <string.h>

#include "common/core/errors.h"
#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu.h"
#include "common/gpu/gpu_phase.h"
#include "common/core/philox.h"
#include "kernels/naive/bias.h"
#include "kernels/naive/dropout.h"
#include "kernels/naive/gelu.h"
#include "kernels/naive/naive_layernorm.h"
#include "kernels/naive/naive_attention.h"
#include "kernels/naive/residual.h"
#include "steps/01_naive/step01.h"

typedef struct {
    LayerConfig cfg;
    void *param[NUM_PARAMS];  // device copies of the 12 parameters, cfg.dtype
    void *grad[NUM_PARAMS];   // their gradients, overwritten by every train_step
    // Activations the forward saves for the backward ([tokens, width], cfg.dtype).
    void *ln1_out, *qkv, *ctx, *y, *ln2_out, *fc1_out, *gelu_out, *out;
    float *ln1_mean, *ln1_rstd, *ln2_mean, *ln2_rstd;  // LayerNorm statistics, fp32
    NaiveAttention attn;
    // Backward scratch.
    void *d_ffn;     // [tokens, ffn]: dgelu, then dh1 in place
    void *d_hidden;  // [tokens, hidden]: dln2, later dln1
    void *d_y;       // [tokens, hidden]: the gradient reaching y
    void *d_proj;    // [tokens, hidden]
    void *d_ctx;     // [tokens, hidden]
    void *d_qkv;     // [tokens, 3 * hidden]
    void *dx;        // [tokens, hidden]
} Naive;

// ---- Linear layers on cuBLAS ------------------------------------------------------------
// cuBLAS is column-major. A row-major [rows, cols] matrix is, to cuBLAS, the column-major
// [cols, rows] matrix: its transpose. So each row-major product below is handed to cuBLAS
// as the product of transposes, operands swapped: (A B)^T = B^T A^T.

static cudaDataType_t cuda_type(DType d) { return d == DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_16F; }

static void gemm(cublasOperation_t op_a, cublasOperation_t op_b, int m, int n, int k,
                 const void *A, int lda, const void *B, int ldb, void *C, int ldc, DType dtype) {
    const float alpha = 1.0f, beta = 0.0f;  // fp32 accumulation, C overwritten
    CUBLAS_CHECK(cublasGemmEx((cublasHandle_t)gpu_cublas_handle(), op_a, op_b, m, n, k, &alpha, A,
                              cuda_type(dtype), lda, B, cuda_type(dtype), ldb, &beta, C,
                              cuda_type(dtype), ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// y[M, N] = x[M, K] w[N, K]^T + b[N]   (PyTorch's Linear: weight [out, in])
static void linear_forward(const void *x, const void *w, const void *b, int M, int K, int N,
                           void *y, DType dtype) {
    GPU_PHASE(CAT_GEMM_FPROP, gemm(CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, w, K, x, K, y, N, dtype));
    bias_add(y, b, M, N, dtype);
}

// dx[M, K] = dy[M, N] w[N, K];  dw[N, K] = dy^T x;  db[N] = column sums of dy.
static void linear_backward(const void *dy, const void *x, const void *w, int M, int K, int N,
                            void *dx, void *dw, void *db, DType dtype) {
    GPU_PHASE(CAT_GEMM_DGRAD, gemm(CUBLAS_OP_N, CUBLAS_OP_N, K, M, N, w, K, dy, N, dx, K, dtype));
    GPU_PHASE(CAT_GEMM_WGRAD, gemm(CUBLAS_OP_N, CUBLAS_OP_T, K, N, M, x, K, dy, N, dw, K, dtype));
    bias_grad(dy, M, N, db, dtype);
}

// ---- the step ---------------------------------------------------------------------------
static void *alloc_act(int64_t elems, DType dtype) { return dev_alloc((size_t)elems * dtype_bytes(dtype)); }

static void *naive_create(const LayerConfig *cfg, const LayerParams *params) {
    Naive *s = xcalloc(1, sizeof *s);
    s->cfg = *cfg;
    const DType dt = cfg->dtype;
    const int64_t T = layer_tokens(cfg), h = cfg->hidden, f = cfg->ffn;
    for (int i = 0; i < NUM_PARAMS; i++) {
        int64_t n = param_numel(cfg, i);
        s->param[i] = dev_upload(params->tensor[i], n, dt);
        s->grad[i] = alloc_act(n, dt);
    }
    s->ln1_out = alloc_act(T * h, dt);
    s->qkv = alloc_act(T * 3 * h, dt);
    s->ctx = alloc_act(T * h, dt);
    s->y = alloc_act(T * h, dt);
    s->ln2_out = alloc_act(T * h, dt);
    s->fc1_out = alloc_act(T * f, dt);
    s->gelu_out = alloc_act(T * f, dt);
    s->out = alloc_act(T * h, dt);
    s->ln1_mean = dev_alloc((size_t)T * sizeof(float));
    s->ln1_rstd = dev_alloc((size_t)T * sizeof(float));
    s->ln2_mean = dev_alloc((size_t)T * sizeof(float));
    s->ln2_rstd = dev_alloc((size_t)T * sizeof(float));
    naive_attention_init(&s->attn, cfg);
    s->d_ffn = alloc_act(T * f, dt);
    s->d_hidden = alloc_act(T * h, dt);
    s->d_y = alloc_act(T * h, dt);
    s->d_proj = alloc_act(T * h, dt);
    s->d_ctx = alloc_act(T * h, dt);
    s->d_qkv = alloc_act(T * 3 * h, dt);
    s->dx = alloc_act(T * h, dt);
    return s;
}

static void naive_forward(Naive *s, const void *x, uint64_t step) {
    const LayerConfig *c = &s->cfg;
    const DType dt = c->dtype;
    const int T = (int)layer_tokens(c), h = c->hidden, f = c->ffn;
    void **w = s->param;

    naive_layernorm_forward(x, w[P_LN1_WEIGHT], w[P_LN1_BIAS], T, h, c->eps, s->ln1_out, s->ln1_mean, s->ln1_rstd, dt);
    linear_forward(s->ln1_out, w[P_QKV_WEIGHT], w[P_QKV_BIAS], T, h, 3 * h, s->qkv, dt);
    naive_attention_forward(&s->attn, s->qkv, s->ctx, dropout_offset(step, DROPOUT_SITE_ATTENTION));
    // y = x + dropout(ctx W_proj^T + b_proj). The projection goes to y's buffer, is dropped
    // out in place, then x is added: backward needs none of the intermediate values (the
    // dropout mask is drawn again from Philox).
    linear_forward(s->ctx, w[P_PROJ_WEIGHT], w[P_PROJ_BIAS], T, h, h, s->y, dt);
    dropout_forward(s->y, (int64_t)T * h, c->hidden_dropout, c->seed, dropout_offset(step, DROPOUT_SITE_HIDDEN), s->y, dt);
    residual_add(s->y, x, (int64_t)T * h, s->y, dt);
    // out = y + FC2(GELU(FC1(LN2(y))))
    naive_layernorm_forward(s->y, w[P_LN2_WEIGHT], w[P_LN2_BIAS], T, h, c->eps, s->ln2_out, s->ln2_mean, s->ln2_rstd, dt);
    linear_forward(s->ln2_out, w[P_FC1_WEIGHT], w[P_FC1_BIAS], T, h, f, s->fc1_out, dt);
    gelu_forward(s->fc1_out, (int64_t)T * f, s->gelu_out, dt);
    linear_forward(s->gelu_out, w[P_FC2_WEIGHT], w[P_FC2_BIAS], T, f, h, s->out, dt);
    residual_add(s->out, s->y, (int64_t)T * h, s->out, dt);
}

static void naive_backward(Naive *s, const void *x, const void *dout, uint64_t step) {
    const LayerConfig *c = &s->cfg;
    const DType dt = c->dtype;
    const int T = (int)layer_tokens(c), h = c->hidden, f = c->ffn;
    void **w = s->param, **g = s->grad;

    // The MLP branch: out = y + FC2(GELU(FC1(LN2(y)))).
    linear_backward(dout, s->gelu_out, w[P_FC2_WEIGHT], T, f, h, s->d_ffn, g[P_FC2_WEIGHT], g[P_FC2_BIAS], dt);
    gelu_backward(s->d_ffn, s->fc1_out, (int64_t)T * f, s->d_ffn, dt);
    linear_backward(s->d_ffn, s->ln2_out, w[P_FC1_WEIGHT], T, h, f, s->d_hidden, g[P_FC1_WEIGHT], g[P_FC1_BIAS], dt);
    naive_layernorm_backward(s->d_hidden, s->y, w[P_LN2_WEIGHT], s->ln2_mean, s->ln2_rstd, T, h, s->d_y,
                       g[P_LN2_WEIGHT], g[P_LN2_BIAS], dt);
    residual_add(s->d_y, dout, (int64_t)T * h, s->d_y, dt);  // the gradient that skipped the MLP
    // The attention branch: y = x + dropout(proj).
    dropout_backward(s->d_y, (int64_t)T * h, c->hidden_dropout, c->seed, dropout_offset(step, DROPOUT_SITE_HIDDEN), s->d_proj, dt);
    linear_backward(s->d_proj, s->ctx, w[P_PROJ_WEIGHT], T, h, h, s->d_ctx, g[P_PROJ_WEIGHT], g[P_PROJ_BIAS], dt);
    naive_attention_backward(&s->attn, s->qkv, s->d_ctx, s->d_qkv, dropout_offset(step, DROPOUT_SITE_ATTENTION));
    linear_backward(s->d_qkv, s->ln1_out, w[P_QKV_WEIGHT], T, h, 3 * h, s->d_hidden, g[P_QKV_WEIGHT], g[P_QKV_BIAS], dt);
    naive_layernorm_backward(s->d_hidden, x, w[P_LN1_WEIGHT], s->ln1_mean, s->ln1_rstd, T, h, s->dx,
                       g[P_LN1_WEIGHT], g[P_LN1_BIAS], dt);
    residual_add(s->dx, s->d_y, (int64_t)T * h, s->dx, dt);  // the gradient that skipped attention
}

static void naive_train_step(void *state, const void *d_x, const void *d_dy, uint64_t step) {
    Naive *s = state;
    naive_forward(s, d_x, step);
    naive_backward(s, d_x, d_dy, step);
}

static void naive_read_results(void *state, LayerResults *res) {
    Naive *s = state;
    const LayerConfig *c = &s->cfg;
    const int64_t n = layer_tokens(c) * c->hidden;
    dev_download(res->out, s->out, n, c->dtype);
    dev_download(res->dx, s->dx, n, c->dtype);
    for (int i = 0; i < NUM_PARAMS; i++)
        dev_download(res->grad.tensor[i], s->grad[i], param_numel(c, i), c->dtype);
}

static void naive_destroy(void *state) {
    Naive *s = state;
    for (int i = 0; i < NUM_PARAMS; i++) {
        dev_free(s->param[i]);
        dev_free(s->grad[i]);
    }
    void *bufs[] = {s->ln1_out, s->qkv, s->ctx, s->y, s->ln2_out, s->fc1_out, s->gelu_out,
                    s->out, s->ln1_mean, s->ln1_rstd, s->ln2_mean, s->ln2_rstd, s->d_ffn,
                    s->d_hidden, s->d_y, s->d_proj, s->d_ctx, s->d_qkv, s->dx};
    dev_free_all(bufs, COUNT_OF(bufs));
    naive_attention_free(&s->attn);
    free(s);
}

// cuBLAS takes int sizes: the token count must fit.
static const char *naive_unsupported(const LayerConfig *cfg) {
    if (layer_tokens(cfg) > 0x7fffffffLL) return "seq * batch must fit in 32 bits (cuBLAS sizes)";
    return NULL;
}

const StepOps STEP_01_NAIVE = {
    .id = "01_naive",
    .title = "naive GPU port",
    .whats_new = "eager-PyTorch-like: cuBLAS GEMMs + one kernel per op, unfused attention",
    .unsupported = naive_unsupported,
    .create = naive_create,
    .train_step = naive_train_step,
    .read_results = naive_read_results,
    .destroy = naive_destroy,
};
