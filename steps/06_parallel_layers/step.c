// Step 06: the parallel layer - attention and MLP side by side on one LayerNorm,
//     out = x + Dropout(Attn(LN(x)) + MLP(LN(x)))
// (reference/parallel_reference.h has the reference and why dropout acts on the sum).
//
// Fused (the default): the weights are stored the way the GEMMs want them,
//     W_in  = [W_qkv ; W_fc1]  [3h + ffn, h]      one GEMM with N = 3h + ffn on LN(x)
//     W_out = [W_proj | W_fc2] [h, h + ffn]       one GEMM with K = h + ffn
// and nothing is copied in between: flash attention reads q, k, v from the first 3h columns
// of the input GEMM's output and writes ctx into the first h columns of a [tokens, h + ffn]
// tensor; GELU reads the last ffn columns and writes the other columns of that tensor; the
// output GEMM then sums the two branches as part of its own K loop.
// Unfused (--unfused): the same layer with four separate Linears and an add, so that the
// comparison shows what the fusions buy apart from what the parallel structure buys.
// FP8 (--fp8): the fused layer with its two GEMMs in FP8 under step 05's delayed scaling
// (each fused GEMM is one Fp8Linear: one scale for [W_qkv ; W_fc1], one for [ctx | g], ...).
#include <stdlib.h>
#include <string.h>

#include "common/core/errors.h"
#include "common/core/gpu_arch.h"
#include "steps/driver/fp8_step.h"
#include "common/gpu/gpu.h"
#include "modules/fp8_linear.h"
#include "modules/layernorm.h"
#include "modules/linear.h"
#include "reference/parallel_reference.h"
#include "common/core/philox.h"
#include "kernels/attention/attention.h"
#include "kernels/fused/elementwise.h"
#include "steps/06_parallel_layers/step06.h"

typedef struct {
    LayerConfig cfg;
    int fused, fp8;
    LayerNorm ln;
    Linear in, out;                // fused: W_in, W_out
    Fp8Linear in8, out8;           // fused in FP8: the same two GEMMs
    Linear qkv, fc1, proj, fc2;    // unfused
    void *a, *in_out, *cat, *z, *y, *d_z, *d_cat, *d_in, *d_a, *dx;  // fused buffers
    void *qkv_out, *h1, *g, *ctx, *z2, *d_ctx, *d_g, *d_h1, *d_qkv, *d_a2;  // unfused buffers
    AttentionProblem attn;  // fused: q, k, v and ctx are views into wider tensors (row strides)
    float *lse;
    void *attn_workspace;
} Step06;

static void *alloc_t(const LayerConfig *c, int64_t width) {
    return dev_alloc((size_t)layer_tokens(c) * width * dtype_bytes(c->dtype));
}

static DelayedScaling recipe = {FP8_RECIPE_HYBRID, 0, 16, AMAX_ALGO_MAX};  // --fp8-format, ...

// The layer's attention. Fused, it reads q, k, v from the first 3h columns of [q k v | h1]
// and writes ctx into the first h columns of [ctx | g]: views, described by row strides.
static AttentionProblem attention_problem(const LayerConfig *c, int fused) {
    AttentionProblem p = attention_layer_problem(c);
    if (fused) p.qkv_row_stride = 3 * c->hidden + c->ffn, p.ctx_row_stride = c->hidden + c->ffn;
    return p;
}

static void *create_common(const LayerConfig *c, const LayerParams *p, int fused, int fp8) {
    Step06 *s = xcalloc(1, sizeof *s);
    s->cfg = *c;
    s->fused = fused, s->fp8 = fp8;
    const int h = c->hidden, f = c->ffn;
    s->attn = attention_problem(c, fused);
    const char *why = attention_unsupported(&s->attn);
    if (why) fail_user("step 06: %s", why);
    const int64_t t = layer_tokens(c);
    float *const *w = p->tensor;
    layernorm_init(&s->ln, h, t, c->eps, w[P_LN1_WEIGHT], w[P_LN1_BIAS], c->dtype);
    s->a = alloc_t(c, h), s->y = alloc_t(c, h), s->d_z = alloc_t(c, h), s->d_a = alloc_t(c, h), s->dx = alloc_t(c, h);
    s->z = alloc_t(c, h);
    s->lse = dev_alloc((size_t)c->batch * c->heads * c->seq * sizeof(float));
    s->attn_workspace = dev_alloc(attention_backward_workspace_bytes(&s->attn));
    if (fused) {
        FusedParallelParams fp;
        fused_parallel_alloc(c, &fp);
        fuse_parallel_params(c, p, &fp);
        if (fp8) {
            fp8_linear_init(&s->in8, h, 3 * h + f, t, fp.w_in, fp.b_in, c->dtype, &recipe);
            fp8_linear_init(&s->out8, h + f, h, t, fp.w_out, fp.b_out, c->dtype, &recipe);
        } else {
            linear_init(&s->in, h, 3 * h + f, fp.w_in, fp.b_in, c->dtype);
            linear_init(&s->out, h + f, h, fp.w_out, fp.b_out, c->dtype);
        }
        fused_parallel_free(&fp);
        s->in_out = alloc_t(c, 3 * h + f), s->d_in = alloc_t(c, 3 * h + f);
        s->cat = alloc_t(c, h + f), s->d_cat = alloc_t(c, h + f);
    } else {
        linear_init(&s->qkv, h, 3 * h, w[P_QKV_WEIGHT], w[P_QKV_BIAS], c->dtype);
        linear_init(&s->fc1, h, f, w[P_FC1_WEIGHT], w[P_FC1_BIAS], c->dtype);
        linear_init(&s->proj, h, h, w[P_PROJ_WEIGHT], w[P_PROJ_BIAS], c->dtype);
        linear_init(&s->fc2, f, h, w[P_FC2_WEIGHT], w[P_FC2_BIAS], c->dtype);
        s->qkv_out = alloc_t(c, 3 * h), s->d_qkv = alloc_t(c, 3 * h);
        s->h1 = alloc_t(c, f), s->g = alloc_t(c, f), s->d_g = alloc_t(c, f), s->d_h1 = alloc_t(c, f);
        s->ctx = alloc_t(c, h), s->z2 = alloc_t(c, h), s->d_ctx = alloc_t(c, h), s->d_a2 = alloc_t(c, h);
    }
    return s;
}

static void *create_fused(const LayerConfig *c, const LayerParams *p) { return create_common(c, p, 1, 0); }
static void *create_unfused(const LayerConfig *c, const LayerParams *p) { return create_common(c, p, 0, 0); }
static void *create_fp8(const LayerConfig *c, const LayerParams *p) { return create_common(c, p, 1, 1); }

// The fused layer's two GEMMs, in 16 bits or in FP8. in: [q k v | h1] = a W_in^T + b_in.
// out: z = [ctx | g] W_out^T; returns b_out, left to the bias-dropout-add that follows.
static void input_gemm_forward(Step06 *s, int64_t t) {
    if (s->fp8) fp8_linear_forward(&s->in8, s->a, s->in_out, t, 1);
    else linear_forward(&s->in, s->a, s->in_out, t, NULL);
}

static const void *output_gemm_forward(Step06 *s, int64_t t) {
    return s->fp8 ? fp8_linear_forward_return_bias(&s->out8, s->cat, s->z, t)
                  : linear_forward_return_bias(&s->out, s->cat, s->z, t);
}

static void input_gemm_backward(Step06 *s, int64_t t) {
    if (s->fp8) fp8_linear_backward(&s->in8, s->d_in, s->d_a, t);
    else linear_backward(&s->in, s->d_in, s->d_a, t);
}

static void output_gemm_backward(Step06 *s, int64_t t) {
    if (s->fp8) fp8_linear_backward(&s->out8, s->d_z, s->d_cat, t);
    else linear_backward(&s->out, s->d_z, s->d_cat, t);
}

static void train_fused(Step06 *s, const void *x, const void *dout, uint64_t step) {
    const LayerConfig *c = &s->cfg;
    const int64_t t = layer_tokens(c), h = c->hidden, f = c->ffn, n_in = 3 * h + f, k_out = h + f;
    const size_t e = dtype_bytes(c->dtype);
    const AttentionDropout attn_dropout = attention_layer_dropout(c, step);
    const uint64_t hid_off = dropout_offset(step, DROPOUT_SITE_HIDDEN);
    // Forward: LN, one GEMM for q, k, v and FC1; attention and GELU write side by side; one
    // GEMM sums the branches; bias, dropout and the residual in one pass.
    layernorm_forward(&s->ln, x, s->a, t);
    input_gemm_forward(s, t);
    attention_forward(&s->attn, &attn_dropout, s->in_out, s->cat, s->lse);
    gelu_forward_strided((char *)s->in_out + 3 * h * e, n_in, (char *)s->cat + h * e, k_out, t, (int)f, c->dtype);
    const void *out_bias = output_gemm_forward(s, t);
    bias_dropout_add_forward(s->z, out_bias, x, s->y, t, (int)h, c->hidden_dropout, c->seed, hid_off, c->dtype);
    // Backward.
    add_dropout_backward(dout, NULL, NULL, s->d_z, t * h, c->hidden_dropout, c->seed, hid_off, c->dtype);
    output_gemm_backward(s, t);  // d[ctx | g], dW_out, db_out
    attention_backward(&s->attn, &attn_dropout, s->in_out, s->cat, s->d_cat, s->lse, s->d_in, s->attn_workspace);
    gelu_backward_strided((char *)s->d_cat + h * e, k_out, (char *)s->in_out + 3 * h * e, n_in,
                          (char *)s->d_in + 3 * h * e, n_in, t, (int)f, c->dtype);
    input_gemm_backward(s, t);
    layernorm_backward(&s->ln, s->d_a, dout, s->dx, t);
    if (s->fp8) {  // delayed scaling: the next step's scales
        fp8_linear_update_scales(&s->in8);
        fp8_linear_update_scales(&s->out8);
    }
}

static void train_unfused(Step06 *s, const void *x, const void *dout, uint64_t step) {
    const LayerConfig *c = &s->cfg;
    const int64_t t = layer_tokens(c), h = c->hidden, f = c->ffn;
    const AttentionDropout attn_dropout = attention_layer_dropout(c, step);
    const uint64_t hid_off = dropout_offset(step, DROPOUT_SITE_HIDDEN);
    layernorm_forward(&s->ln, x, s->a, t);
    linear_forward(&s->qkv, s->a, s->qkv_out, t, NULL);
    linear_forward(&s->fc1, s->a, s->h1, t, NULL);
    attention_forward(&s->attn, &attn_dropout, s->qkv_out, s->ctx, s->lse);
    gelu_forward_strided(s->h1, f, s->g, f, t, (int)f, c->dtype);
    linear_forward(&s->proj, s->ctx, s->z, t, NULL);
    linear_forward(&s->fc2, s->g, s->z2, t, NULL);
    add_inplace(s->z, s->z2, t * h, c->dtype);
    bias_dropout_add_forward(s->z, NULL, x, s->y, t, (int)h, c->hidden_dropout, c->seed, hid_off, c->dtype);
    add_dropout_backward(dout, NULL, NULL, s->d_z, t * h, c->hidden_dropout, c->seed, hid_off, c->dtype);
    linear_backward(&s->proj, s->d_z, s->d_ctx, t);
    linear_backward(&s->fc2, s->d_z, s->d_g, t);
    attention_backward(&s->attn, &attn_dropout, s->qkv_out, s->ctx, s->d_ctx, s->lse, s->d_qkv, s->attn_workspace);
    gelu_backward_strided(s->d_g, f, s->h1, f, s->d_h1, f, t, (int)f, c->dtype);
    linear_backward(&s->fc1, s->d_h1, s->d_a, t);
    linear_backward(&s->qkv, s->d_qkv, s->d_a2, t);
    add_inplace(s->d_a, s->d_a2, t * h, c->dtype);
    layernorm_backward(&s->ln, s->d_a, dout, s->dx, t);
}

static void train_step(void *state, const void *x, const void *dout, uint64_t step) {
    Step06 *s = state;
    if (s->fused) train_fused(s, x, dout, step);
    else train_unfused(s, x, dout, step);
}

static void read_results(void *state, LayerResults *r) {
    Step06 *s = state;
    const LayerConfig *c = &s->cfg;
    const int64_t n = layer_tokens(c) * c->hidden;
    float **g = r->grad.tensor;
    dev_download(r->out, s->y, n, c->dtype);
    dev_download(r->dx, s->dx, n, c->dtype);
    layernorm_read_grads(&s->ln, g[P_LN1_WEIGHT], g[P_LN1_BIAS]);
    if (s->fused) {
        FusedParallelParams fg;
        fused_parallel_alloc(c, &fg);
        layernorm_read_grads(&s->ln, fg.ln_weight, fg.ln_bias);
        if (s->fp8) {
            fp8_linear_read_grads(&s->in8, fg.w_in, fg.b_in);
            fp8_linear_read_grads(&s->out8, fg.w_out, fg.b_out);
        } else {
            linear_read_grads(&s->in, fg.w_in, fg.b_in);
            linear_read_grads(&s->out, fg.w_out, fg.b_out);
        }
        parallel_grads_from_fused(c, &fg, &r->grad);
        fused_parallel_free(&fg);
    } else {
        linear_read_grads(&s->qkv, g[P_QKV_WEIGHT], g[P_QKV_BIAS]);
        linear_read_grads(&s->fc1, g[P_FC1_WEIGHT], g[P_FC1_BIAS]);
        linear_read_grads(&s->proj, g[P_PROJ_WEIGHT], g[P_PROJ_BIAS]);
        linear_read_grads(&s->fc2, g[P_FC2_WEIGHT], g[P_FC2_BIAS]);
        for (int i = 0; i < c->hidden; i++) g[P_LN2_WEIGHT][i] = g[P_LN2_BIAS][i] = 0.0f;
    }
}

static void destroy(void *state) {
    Step06 *s = state;
    layernorm_free(&s->ln);
    if (s->fp8) {
        fp8_linear_free(&s->in8);
        fp8_linear_free(&s->out8);
    } else if (s->fused) {
        linear_free(&s->in);
        linear_free(&s->out);
    } else {
        linear_free(&s->qkv), linear_free(&s->fc1), linear_free(&s->proj), linear_free(&s->fc2);
    }
    void *bufs[] = {s->a, s->in_out, s->cat, s->z, s->y, s->d_z, s->d_cat, s->d_in, s->d_a, s->dx, s->qkv_out,
                    s->h1, s->g, s->ctx, s->z2, s->d_ctx, s->d_g, s->d_h1, s->d_qkv, s->d_a2, s->lse,
                    s->attn_workspace};
    dev_free_all(bufs, COUNT_OF(bufs));
    free(s);
}

static const char *unsupported_fused(const LayerConfig *c) {
    const AttentionProblem attn = attention_problem(c, 1);
    const char *why = attention_unsupported(&attn);
    return why ? why : layernorm_unsupported(c->hidden);
}

static const char *unsupported_unfused(const LayerConfig *c) {
    const AttentionProblem attn = attention_problem(c, 0);
    const char *why = attention_unsupported(&attn);
    return why ? why : layernorm_unsupported(c->hidden);
}

static const char *unsupported_fp8(const LayerConfig *c) {
    const char *why = unsupported_fused(c);
    return why ? why : fp8_layer_unsupported(c);
}

// The CPU reference rounds the Linears' operands as the GPU's first FP8 step does.
static void reference_fp8(const LayerConfig *cfg, const LayerParams *p, const LayerInputs *in, uint64_t step,
                          LayerResults *res) {
    RefQuantizer q = fp8_first_step_quantizer(&recipe);
    ref_parallel_train_step_quantized(cfg, p, in, step, &q, res);
}

// --fp8 and --unfused pick the variant (main.c takes them out of argv); here they are known as
// switches only so that "--fp8=1" is refused as a switch given a value.
static int is_variant_switch(const char *flag, const char *value) {
    return !value && (!strcmp(flag, "--fp8") || !strcmp(flag, "--unfused"));
}

static int parse_flag_fp8(const char *flag, const char *value) {
    return is_variant_switch(flag, value) || fp8_recipe_parse_flag(&recipe, flag, value);
}

// Without --fp8 the recipe's flags would change nothing: refused, saying what they need.
static int parse_flag_16bit(const char *flag, const char *value) {
    if (is_variant_switch(flag, value)) return 1;
    DelayedScaling unused = recipe;
    if (!value || !fp8_recipe_parse_flag(&unused, flag, value)) return 0;
    fail_user("%s sets the FP8 recipe, which only --fp8 uses: add --fp8", flag);
}

const StepOps STEP_06_PARALLEL_LAYERS = {
    .id = "06_parallel_layers",
    .title = "parallel attention + MLP, fused weights",
    .whats_new = "one LN; [W_qkv;W_fc1] and [W_proj|W_fc2] GEMMs",
    .unsupported = unsupported_fused,
    .create = create_fused,
    .train_step = train_step,
    .read_results = read_results,
    .destroy = destroy,
    .parse_flag = parse_flag_16bit,
    .flags_help = "  --unfused            the same parallel layer with four separate Linears\n"
                  "  --fp8                its two fused GEMMs in FP8 (delayed scaling; step 05's flags below)\n"
                  "                       (--fp8 and --unfused exclude each other: the FP8 variant is the fused one)\n"
                  FP8_RECIPE_FLAGS_HELP,
    .reference = ref_parallel_train_step,
    .reference_rounded = ref_parallel_train_step_quantized,
    .variant = {LAYER_PARALLEL, 0, 1},  // for --breakdown's floors
};

const StepOps STEP_06_PARALLEL_UNFUSED = {
    .id = "06u_parallel_unfused",
    .title = "parallel attention + MLP, separate weights",
    .whats_new = "one LN; four separate Linears (no weight fusion)",
    .unsupported = unsupported_unfused,
    .create = create_unfused,
    .train_step = train_step,
    .read_results = read_results,
    .destroy = destroy,
    .parse_flag = parse_flag_16bit,
    .reference = ref_parallel_train_step,
    .reference_rounded = ref_parallel_train_step_quantized,
    .variant = {LAYER_PARALLEL, 0, 1},
};

const StepOps STEP_06_PARALLEL_FP8 = {
    .id = "06f_parallel_fp8",
    .title = "parallel attention + MLP, fused weights, FP8",
    .whats_new = "step 06's two fused GEMMs in FP8 (delayed scaling)",
    .unsupported = unsupported_fp8,
    .create = create_fp8,
    .train_step = train_step,
    .read_results = read_results,
    .destroy = destroy,
    .parse_flag = parse_flag_fp8,
    .flags_help = FP8_RECIPE_FLAGS_HELP,
    .tolerance = fp8_step_tolerance,
    .reference = reference_fp8,
    .variant = {LAYER_PARALLEL, 1, 1},
    .min_cc = GPU_ARCH_MIN_FP8,
};
