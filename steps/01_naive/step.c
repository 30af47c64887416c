// Step 01: the first GPU port, deliberately simple. It mirrors the quickstart's eager
// PyTorch layer op for op: cuBLAS for every matrix product, then one plain kernel for each
// bias add, LayerNorm, GELU, softmax, dropout and residual add, each a full trip through
// device memory. Attention materialises the [seq x seq] scores (kernels/naive).
#include <stdlib.h>

#include "common/cuda_check.h"
#include "common/gpu.h"
#include "common/philox.h"
#include "kernels/naive/cublas_linear.h"
#include "kernels/naive/naive_attention.h"
#include "kernels/naive/naive_ops.h"
#include "steps/01_naive/step01.h"

typedef struct {
    LayerConfig cfg;
    void *param[NUM_PARAMS];  // device, cfg.dtype
    void *grad[NUM_PARAMS];
    NaiveAttention attn;
    // Activations saved by forward for backward ([tokens, width] each).
    void *ln1, *qkv, *ctx, *proj, *proj_dropped, *y, *ln2, *fc1, *gelu, *fc2, *out;
    float *ln1_mean, *ln1_rstd, *ln2_mean, *ln2_rstd;
    // Gradients flowing backward.
    void *d_gelu, *d_fc1, *d_ln2, *d_y, *d_proj, *d_ctx, *d_qkv, *d_ln1, *dx;
} Step01;

static void *alloc_act(const Step01 *s, int64_t width) {
    return dev_alloc((size_t)(layer_tokens(&s->cfg) * width) * dtype_bytes(s->cfg.dtype));
}

static void *create(const LayerConfig *cfg, const LayerParams *params) {
    Step01 *s = xcalloc(1, sizeof *s);
    s->cfg = *cfg;
    for (int i = 0; i < NUM_PARAMS; i++) {
        s->param[i] = dev_upload(params->tensor[i], param_numel(cfg, i), cfg->dtype);
        s->grad[i] = dev_alloc((size_t)param_numel(cfg, i) * dtype_bytes(cfg->dtype));
    }
    naive_attention_init(&s->attn, cfg);
    int64_t h = cfg->hidden, f = cfg->ffn, t = layer_tokens(cfg);
    void **h_sized[] = {&s->ln1, &s->ctx, &s->proj, &s->proj_dropped, &s->y, &s->ln2, &s->fc2,
                        &s->out, &s->d_ln2, &s->d_y, &s->d_proj, &s->d_ctx, &s->d_ln1, &s->dx};
    for (size_t i = 0; i < sizeof h_sized / sizeof h_sized[0]; i++) *h_sized[i] = alloc_act(s, h);
    void **f_sized[] = {&s->fc1, &s->gelu, &s->d_gelu, &s->d_fc1};
    for (size_t i = 0; i < sizeof f_sized / sizeof f_sized[0]; i++) *f_sized[i] = alloc_act(s, f);
    s->qkv = alloc_act(s, 3 * h);
    s->d_qkv = alloc_act(s, 3 * h);
    s->ln1_mean = dev_alloc((size_t)t * sizeof(float));
    s->ln1_rstd = dev_alloc((size_t)t * sizeof(float));
    s->ln2_mean = dev_alloc((size_t)t * sizeof(float));
    s->ln2_rstd = dev_alloc((size_t)t * sizeof(float));
    return s;
}

// y = x W^T + b, as torch.nn.Linear runs it eagerly: a GEMM, then a bias kernel.
static void linear_forward(const Step01 *s, const void *x, int w, int b, void *y, int in, int out) {
    cublas_linear_forward(x, s->param[w], y, layer_tokens(&s->cfg), in, out, s->cfg.dtype);
    naive_bias_add(y, s->param[b], layer_tokens(&s->cfg), out, s->cfg.dtype);
}

static void linear_backward(const Step01 *s, const void *dy, const void *x, int w, int b, void *dx,
                            int in, int out) {
    int64_t t = layer_tokens(&s->cfg);
    cublas_linear_backward_input(dy, s->param[w], dx, t, in, out, s->cfg.dtype);
    cublas_linear_backward_weight(dy, x, s->grad[w], t, in, out, s->cfg.dtype);
    naive_bias_grad(dy, s->grad[b], t, out, s->cfg.dtype);
}

static void forward(Step01 *s, const void *x, uint64_t step) {
    const LayerConfig *c = &s->cfg;
    const int64_t t = layer_tokens(c), h = c->hidden, f = c->ffn;
    const DType dt = c->dtype;
    naive_layernorm_forward(x, s->param[P_LN1_WEIGHT], s->param[P_LN1_BIAS], s->ln1, s->ln1_mean,
                            s->ln1_rstd, t, (int)h, c->eps, dt);
    linear_forward(s, s->ln1, P_QKV_WEIGHT, P_QKV_BIAS, s->qkv, (int)h, (int)(3 * h));
    naive_attention_forward(&s->attn, s->qkv, s->ctx, dropout_offset(step, DROPOUT_SITE_ATTENTION));
    linear_forward(s, s->ctx, P_PROJ_WEIGHT, P_PROJ_BIAS, s->proj, (int)h, (int)h);
    naive_dropout(s->proj, s->proj_dropped, t * h, c->hidden_dropout, c->seed,
                  dropout_offset(step, DROPOUT_SITE_HIDDEN), dt);
    naive_add(x, s->proj_dropped, s->y, t * h, dt);
    naive_layernorm_forward(s->y, s->param[P_LN2_WEIGHT], s->param[P_LN2_BIAS], s->ln2, s->ln2_mean,
                            s->ln2_rstd, t, (int)h, c->eps, dt);
    linear_forward(s, s->ln2, P_FC1_WEIGHT, P_FC1_BIAS, s->fc1, (int)h, (int)f);
    naive_gelu_forward(s->fc1, s->gelu, t * f, dt);
    linear_forward(s, s->gelu, P_FC2_WEIGHT, P_FC2_BIAS, s->fc2, (int)f, (int)h);
    naive_add(s->y, s->fc2, s->out, t * h, dt);
}

static void backward(Step01 *s, const void *x, const void *dout, uint64_t step) {
    const LayerConfig *c = &s->cfg;
    const int64_t t = layer_tokens(c), h = c->hidden, f = c->ffn;
    const DType dt = c->dtype;
    // out = y + FC2(GELU(FC1(LN2(y))))
    linear_backward(s, dout, s->gelu, P_FC2_WEIGHT, P_FC2_BIAS, s->d_gelu, (int)f, (int)h);
    naive_gelu_backward(s->d_gelu, s->fc1, s->d_fc1, t * f, dt);
    linear_backward(s, s->d_fc1, s->ln2, P_FC1_WEIGHT, P_FC1_BIAS, s->d_ln2, (int)h, (int)f);
    naive_layernorm_backward(s->d_ln2, s->y, s->param[P_LN2_WEIGHT], s->ln2_mean, s->ln2_rstd, s->d_y,
                             s->grad[P_LN2_WEIGHT], s->grad[P_LN2_BIAS], t, (int)h, dt);
    naive_add(s->d_y, dout, s->d_y, t * h, dt);  // the residual
    // y = x + dropout(proj)
    naive_dropout(s->d_y, s->d_proj, t * h, c->hidden_dropout, c->seed,
                  dropout_offset(step, DROPOUT_SITE_HIDDEN), dt);
    linear_backward(s, s->d_proj, s->ctx, P_PROJ_WEIGHT, P_PROJ_BIAS, s->d_ctx, (int)h, (int)h);
    naive_attention_backward(&s->attn, s->qkv, s->d_ctx, s->d_qkv,
                             dropout_offset(step, DROPOUT_SITE_ATTENTION));
    linear_backward(s, s->d_qkv, s->ln1, P_QKV_WEIGHT, P_QKV_BIAS, s->d_ln1, (int)h, (int)(3 * h));
    naive_layernorm_backward(s->d_ln1, x, s->param[P_LN1_WEIGHT], s->ln1_mean, s->ln1_rstd, s->dx,
                             s->grad[P_LN1_WEIGHT], s->grad[P_LN1_BIAS], t, (int)h, dt);
    naive_add(s->dx, s->d_y, s->dx, t * h, dt);  // the residual
}

static void train_step(void *state, const void *x, const void *dy, uint64_t step) {
    forward(state, x, step);
    backward(state, x, dy, step);
}

static void read_results(void *state, LayerResults *res) {
    Step01 *s = state;
    int64_t n = layer_tokens(&s->cfg) * s->cfg.hidden;
    dev_download(res->out, s->out, n, s->cfg.dtype);
    dev_download(res->dx, s->dx, n, s->cfg.dtype);
    for (int i = 0; i < NUM_PARAMS; i++)
        dev_download(res->grad.tensor[i], s->grad[i], param_numel(&s->cfg, i), s->cfg.dtype);
}

static void destroy(void *state) {
    Step01 *s = state;
    for (int i = 0; i < NUM_PARAMS; i++) {
        dev_free(s->param[i]);
        dev_free(s->grad[i]);
    }
    naive_attention_free(&s->attn);
    void *bufs[] = {s->ln1, s->qkv, s->ctx, s->proj, s->proj_dropped, s->y, s->ln2, s->fc1, s->gelu,
                    s->fc2, s->out, s->ln1_mean, s->ln1_rstd, s->ln2_mean, s->ln2_rstd, s->d_gelu,
                    s->d_fc1, s->d_ln2, s->d_y, s->d_proj, s->d_ctx, s->d_qkv, s->d_ln1, s->dx};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) dev_free(bufs[i]);
    free(s);
}

const StepOps STEP_01_NAIVE = {
    .id = "01_naive",
    .title = "naive GPU port",
    .whats_new = "one kernel per op, cuBLAS GEMMs, scores materialised",
    .create = create,
    .train_step = train_step,
    .read_results = read_results,
    .destroy = destroy,
};
