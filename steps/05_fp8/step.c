// Step 05: step 04's layer with its four Linears in FP8, scaled by delayed scaling - as TE's
// fp8_autocast(recipe=DelayedScaling(...)). Attention stays in fp16/bf16 (TE's default), unless
// --fp8-attention (opt-in, Hopper, head dim 128, no dropout, not causal): then Q, K and V are
// cast to E4M3 with delayed scaling (their own scaling states) and the FP8 flash forward
// (kernels/attention/attention_fp8.h) writes ctx and lse; the backward stays the 16-bit flash
// backward on the 16-bit Q, K, V with that ctx and lse (README: what that means).
//
//   x -> LN1 -> [FP8 Linear qkv] -> flash attention -> [FP8 Linear proj] -> bias+dropout+x -> y
//   y -> LN2 -> [FP8 Linear fc1] -> GELU -> [FP8 Linear fc2] -> +y -> out
// (GELU is applied by fc2's cast to FP8: its output never exists in 16 bits.)
// After each training step every FP8 tensor's scale is updated from its amax history on the
// GPU (modules/fp8_linear.c). --check compares with the CPU reference whose Linears
// round their operands to FP8 with the same scales (1 at the first step), so FP8's own error
// is not waved through a loose tolerance.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/errors.h"
#include "common/core/gpu_arch.h"
#include "common/fp8/fp8_format.h"
#include "common/fp8/fp8_recipe.h"
#include "steps/driver/fp8_step.h"
#include "common/gpu/gpu.h"
#include "common/gpu/gpu_phase.h"
#include "common/io/output_file.h"
#include "modules/fp8_linear.h"
#include "modules/layernorm.h"
#include "common/core/philox.h"
#include "reference/reference.h"
#include "kernels/attention/attention.h"
#include "kernels/attention/attention_fp8.h"
#include "kernels/fp8/fp8_attention_cast.h"
#include "kernels/fp8/fp8_cast.h"
#include "kernels/fused/elementwise.h"
#include "steps/05_fp8/step05.h"

static DelayedScaling recipe = {FP8_RECIPE_HYBRID, 0, 16, AMAX_ALGO_MAX};
static const char *scaling_csv;  // --fp8-log FILE: per step, every FP8 tensor's amax and scale
// --fp8-attention: the FP8 attention forward. StepOps.parse_flag has no context, so the
// setting lives here (as step 04's --no-overlap-wgrad).
static int fp8_attention;


enum { ATTN_Q, ATTN_K, ATTN_V, NUM_ATTN_TENSORS };
static const char *const ATTN_TENSOR_NAMES[NUM_ATTN_TENSORS] = {"q", "k", "v"};

enum { QKV, PROJ, FC1, FC2, NUM_LINEARS };
static const char *const LINEAR_NAMES[NUM_LINEARS] = {"qkv", "proj", "fc1", "fc2"};

typedef struct {
    LayerConfig cfg;
    LayerNorm ln1, ln2;
    Fp8Linear lin[NUM_LINEARS];
    void *qkv, *ctx, *proj, *y, *h1, *out;
    void *d_g, *d_ln2, *d_y, *d_proj, *d_ctx, *d_qkv, *d_ln1, *dx;
    AttentionProblem attn;
    float *lse;
    // --fp8-attention only (else NULL): Q, K, V in E4M3 (V transposed) and their scaling states.
    AttentionFp8Problem attn8;
    uint8_t *q8, *k8, *vt8;
    float *attn_meta[NUM_ATTN_TENSORS];
    void *attn_workspace;
    FILE *log;
    uint64_t steps_done;
} Step05;

// The FP8 forward's problem for this layer: packed Q and K, Vt rows of seq rounded up to 16.
static AttentionFp8Problem fp8_attention_problem(const LayerConfig *c) {
    AttentionFp8Problem p = {.seq = c->seq, .batch = c->batch, .heads = c->heads, .head_dim = layer_head_dim(c),
                             .dtype = c->dtype, .causal = c->causal, .vt_row_stride = 0};
    return p;
}

// What --fp8-attention cannot run, before any GPU work (NULL: nothing).
static const char *fp8_attention_unsupported(const LayerConfig *c) {
    static char why[400];
    if (c->attn_dropout > 0.0f) {
        snprintf(why, sizeof why, "--fp8-attention: the FP8 attention forward has no dropout, and attention dropout "
                 "is %g: set it to 0 (--dropout 0, or --attn-dropout 0 to keep the hidden dropout; the "
                 "quickstart's default for both is 0.1)", c->attn_dropout);
        return why;
    }
    if (c->causal) return "--fp8-attention: the FP8 attention forward has no causal mask: drop --causal";
    const AttentionFp8Problem p = fp8_attention_problem(c);
    if (p.head_dim != 128) {
        snprintf(why, sizeof why, "--fp8-attention: the FP8 attention forward needs head_dim 128 (hidden / heads), "
                 "not %d (e.g. --preset small --heads 2 gives 256 / 2 = 128)", p.head_dim);
        return why;
    }
    const char *kernel_why = attention_fp8_unsupported(&p);
    if (!kernel_why) kernel_why = attention_fp8_settings_unsupported();
    if (kernel_why) {
        snprintf(why, sizeof why, "--fp8-attention: %s", kernel_why);
        return why;
    }
    return NULL;
}

static const char *unsupported(const LayerConfig *c) {
    const AttentionProblem attn = attention_layer_problem(c);
    const char *why = attention_unsupported(&attn);
    if (!why) why = layernorm_unsupported(c->hidden);
    if (!why) why = fp8_layer_unsupported(c);
    if (!why && fp8_attention) why = fp8_attention_unsupported(c);
    return why;
}

// With --fp8-attention: wgmma (compute capability 9.0, exactly) and the sm_90a code of the FP8
// forward, asked by the driver before any work (StepOps.flag_gpu_refusal).
static const char *fp8_attention_gpu_refusal(void) {
    if (!fp8_attention) return NULL;
    const char *what = "step 05_fp8's --fp8-attention (the FP8 attention forward, wgmma on E4M3)";
    const char *why = gpu_refusal(what, GPU_ARCH_HOPPER);
    if (why) return why;
    if (attention_fp8_available()) return NULL;
    static char sentence[512];
    snprintf(sentence, sizeof sentence, "%s needs Hopper's wgmma (compute capability 9.0) and this build's sm_90a "
             "code; this GPU is %s, running %s", what, gpu_description(), gpu_code_description());
    return sentence;
}

static void *create(const LayerConfig *c, const LayerParams *p) {
    Step05 *s = xcalloc(1, sizeof *s);
    s->cfg = *c;
    s->attn = attention_layer_problem(c);
    const int h = c->hidden, f = c->ffn;
    const int64_t t = layer_tokens(c);
    const size_t e = dtype_bytes(c->dtype);
    float *const *w = p->tensor;
    layernorm_init(&s->ln1, h, t, c->eps, w[P_LN1_WEIGHT], w[P_LN1_BIAS], c->dtype);
    layernorm_init(&s->ln2, h, t, c->eps, w[P_LN2_WEIGHT], w[P_LN2_BIAS], c->dtype);
    fp8_linear_init(&s->lin[QKV], h, 3 * h, t, w[P_QKV_WEIGHT], w[P_QKV_BIAS], c->dtype, &recipe);
    fp8_linear_init(&s->lin[PROJ], h, h, t, w[P_PROJ_WEIGHT], w[P_PROJ_BIAS], c->dtype, &recipe);
    fp8_linear_init(&s->lin[FC1], h, f, t, w[P_FC1_WEIGHT], w[P_FC1_BIAS], c->dtype, &recipe);
    fp8_linear_init(&s->lin[FC2], f, h, t, w[P_FC2_WEIGHT], w[P_FC2_BIAS], c->dtype, &recipe);
    void **hs[] = {&s->ctx, &s->proj, &s->y, &s->out, &s->d_ln2, &s->d_y, &s->d_proj,
                   &s->d_ctx, &s->d_ln1, &s->dx};
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) *hs[i] = dev_alloc((size_t)t * h * e);
    void **fs[] = {&s->h1, &s->d_g};
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++) *fs[i] = dev_alloc((size_t)t * f * e);
    s->qkv = dev_alloc((size_t)t * 3 * h * e), s->d_qkv = dev_alloc((size_t)t * 3 * h * e);
    s->lse = dev_alloc((size_t)c->batch * c->heads * c->seq * sizeof(float));
    s->attn_workspace = dev_alloc(attention_backward_workspace_bytes(&s->attn));
    if (fp8_attention) {
        s->attn8 = fp8_attention_problem(c);
        const char *why = attention_fp8_unsupported(&s->attn8);
        if (why) DIE("step 05: %s", why);  // unsupported() refused it before
        s->q8 = dev_alloc((size_t)t * h), s->k8 = dev_alloc((size_t)t * h);
        s->vt8 = dev_alloc((size_t)c->batch * c->heads * 128 * attention_fp8_vt_row_stride(&s->attn8));
        for (int i = 0; i < NUM_ATTN_TENSORS; i++) s->attn_meta[i] = fp8_meta_new(recipe.history_len);
    }
    if (scaling_csv) {  // written beside and renamed at destroy: whole or not at all
        s->log = output_open(scaling_csv, "w");
        fprintf(s->log, "step,linear,tensor,amax,scale\n");  // --fp8-attention: linear "attention", q k v
    }
    return s;
}

// One row per FP8 tensor: the amax this step recorded and the scale the next step will use.
static void log_scaling(Step05 *s) {
    static const char *const tensors[3] = {"x", "w", "dy"};
    for (int l = 0; l < NUM_LINEARS; l++) {
        float scale[3], amax[3];
        fp8_linear_read_scaling(&s->lin[l], scale, amax);
        for (int k = 0; k < 3; k++)
            fprintf(s->log, "%llu,%s,%s,%g,%g\n", (unsigned long long)s->steps_done, LINEAR_NAMES[l], tensors[k],
                    amax[k], scale[k]);
    }
    if (!s->q8) return;
    for (int i = 0; i < NUM_ATTN_TENSORS; i++) {
        float m[FP8_META_HISTORY + 1];
        dev_download_f32(m, s->attn_meta[i], FP8_META_HISTORY + 1);
        fprintf(s->log, "%llu,attention,%s,%g,%g\n", (unsigned long long)s->steps_done, ATTN_TENSOR_NAMES[i],
                m[FP8_META_HISTORY], m[FP8_META_SCALE]);
    }
}

// --fp8-attention's forward: Q, K, V of the 16-bit qkv to E4M3 (V transposed, each recording its
// amax), then the FP8 flash forward: ctx and lse, as attention_forward writes them.
static void attention_forward_in_fp8(Step05 *s) {
    const LayerConfig *c = &s->cfg;
    const Fp8AttentionCast cast = {.seq = c->seq, .batch = c->batch, .heads = c->heads, .head_dim = s->attn8.head_dim,
                                   .qkv_row_stride = 0, .vt_row_stride = attention_fp8_vt_row_stride(&s->attn8),
                                   .dtype = c->dtype};
    fp8_cast_qkv_for_attention(&cast, s->qkv, s->q8, s->k8, s->vt8, s->attn_meta[ATTN_Q], s->attn_meta[ATTN_K],
                               s->attn_meta[ATTN_V]);
    // --breakdown: the cast counts as an FP8 cast (its own phase), the forward as attention's.
    gpu_phase(CAT_ATTN_FWD);
    attention_forward_fp8(&s->attn8, s->q8, s->k8, s->vt8, s->attn_meta[ATTN_Q] + FP8_META_SCALE_INV,
                          s->attn_meta[ATTN_K] + FP8_META_SCALE_INV, s->attn_meta[ATTN_V] + FP8_META_SCALE_INV, s->ctx,
                          s->lse);
    gpu_phase_end();
}

static void forward(void *state, const void *x, uint64_t step) {
    Step05 *s = state;
    const LayerConfig *c = &s->cfg;
    const int64_t t = layer_tokens(c), h = c->hidden;
    const AttentionDropout attn_dropout = attention_layer_dropout(c, step);
    const uint64_t hid_off = dropout_offset(step, DROPOUT_SITE_HIDDEN);
    // The LayerNorms write their output straight in FP8, as the next Linear's input.
    const Fp8Input qkv_in = fp8_linear_input(&s->lin[QKV]), fc1_in = fp8_linear_input(&s->lin[FC1]);
    layernorm_forward_fp8(&s->ln1, x, qkv_in.data, qkv_in.scale, qkv_in.amax, qkv_in.format, t);
    fp8_linear_forward_fp8_input(&s->lin[QKV], s->qkv, t, 1);
    if (s->q8) attention_forward_in_fp8(s);
    else attention_forward(&s->attn, &attn_dropout, s->qkv, s->ctx, s->lse);
    const void *proj_bias = fp8_linear_forward_return_bias(&s->lin[PROJ], s->ctx, s->proj, t);
    bias_dropout_add_forward(s->proj, proj_bias, x, s->y, t, (int)h, c->hidden_dropout, c->seed, hid_off, c->dtype);
    layernorm_forward_fp8(&s->ln2, s->y, fc1_in.data, fc1_in.scale, fc1_in.amax, fc1_in.format, t);
    fp8_linear_forward_fp8_input(&s->lin[FC1], s->h1, t, 1);
    fp8_linear_forward_gelu(&s->lin[FC2], s->h1, s->out, t, 1);  // GELU goes straight to FP8
    add_inplace(s->out, s->y, t * h, c->dtype);
}

static void backward(void *state, const void *dout, uint64_t step) {
    Step05 *s = state;
    const LayerConfig *c = &s->cfg;
    const int64_t t = layer_tokens(c), h = c->hidden;
    const AttentionDropout attn_dropout = attention_layer_dropout(c, step);
    const uint64_t hid_off = dropout_offset(step, DROPOUT_SITE_HIDDEN);
    fp8_linear_backward(&s->lin[FC2], dout, s->d_g, t);
    fp8_linear_backward_dgelu(&s->lin[FC1], s->d_g, s->h1, s->d_ln2, t);  // GELU' applied by the cast
    layernorm_backward(&s->ln2, s->d_ln2, dout, s->d_y, t);
    add_dropout_backward(s->d_y, NULL, NULL, s->d_proj, t * h, c->hidden_dropout, c->seed, hid_off, c->dtype);
    fp8_linear_backward(&s->lin[PROJ], s->d_proj, s->d_ctx, t);
    // With --fp8-attention too: the 16-bit backward on the 16-bit qkv, with the FP8 forward's
    // ctx and lse (P recomputed in 16 bits from that lse).
    attention_backward(&s->attn, &attn_dropout, s->qkv, s->ctx, s->d_ctx, s->lse, s->d_qkv, s->attn_workspace);
    fp8_linear_backward(&s->lin[QKV], s->d_qkv, s->d_ln1, t);
    layernorm_backward(&s->ln1, s->d_ln1, s->d_y, s->dx, t);
    // Delayed scaling: the next step's scales from this step's (and earlier) amaxes.
    if (s->log) log_scaling(s);
    for (int l = 0; l < NUM_LINEARS; l++) fp8_linear_update_scales(&s->lin[l]);
    if (s->q8) {
        const int most_recent = recipe.amax_algo == AMAX_ALGO_MOST_RECENT;
        for (int i = 0; i < NUM_ATTN_TENSORS; i++)
            fp8_update_scale_device(s->attn_meta[i], recipe.history_len, fp8_max(FP8_E4M3), recipe.margin,
                                    most_recent);
    }
    s->steps_done++;
}

static void train_step(void *state, const void *x, const void *dout, uint64_t step) {
    forward(state, x, step);
    backward(state, dout, step);
}

static const void *output(const void *state) { return ((const Step05 *)state)->out; }

// New master-weight values: the 16-bit weights change, the FP8 scaling state carries on.
static void load_params(void *state, const LayerParams *p) {
    Step05 *s = state;
    float *const *w = p->tensor;
    layernorm_load_params(&s->ln1, w[P_LN1_WEIGHT], w[P_LN1_BIAS]);
    layernorm_load_params(&s->ln2, w[P_LN2_WEIGHT], w[P_LN2_BIAS]);
    fp8_linear_load_params(&s->lin[QKV], w[P_QKV_WEIGHT], w[P_QKV_BIAS]);
    fp8_linear_load_params(&s->lin[PROJ], w[P_PROJ_WEIGHT], w[P_PROJ_BIAS]);
    fp8_linear_load_params(&s->lin[FC1], w[P_FC1_WEIGHT], w[P_FC1_BIAS]);
    fp8_linear_load_params(&s->lin[FC2], w[P_FC2_WEIGHT], w[P_FC2_BIAS]);
}

static void read_results(void *state, LayerResults *r) {
    Step05 *s = state;
    const LayerConfig *c = &s->cfg;
    int64_t n = layer_tokens(c) * c->hidden;
    float **g = r->grad.tensor;
    dev_download(r->out, s->out, n, c->dtype);
    dev_download(r->dx, s->dx, n, c->dtype);
    layernorm_read_grads(&s->ln1, g[P_LN1_WEIGHT], g[P_LN1_BIAS]);
    layernorm_read_grads(&s->ln2, g[P_LN2_WEIGHT], g[P_LN2_BIAS]);
    fp8_linear_read_grads(&s->lin[QKV], g[P_QKV_WEIGHT], g[P_QKV_BIAS]);
    fp8_linear_read_grads(&s->lin[PROJ], g[P_PROJ_WEIGHT], g[P_PROJ_BIAS]);
    fp8_linear_read_grads(&s->lin[FC1], g[P_FC1_WEIGHT], g[P_FC1_BIAS]);
    fp8_linear_read_grads(&s->lin[FC2], g[P_FC2_WEIGHT], g[P_FC2_BIAS]);
}

static void destroy(void *state) {
    Step05 *s = state;
    layernorm_free(&s->ln1);
    layernorm_free(&s->ln2);
    for (int l = 0; l < NUM_LINEARS; l++) fp8_linear_free(&s->lin[l]);
    void *bufs[] = {s->qkv, s->ctx, s->proj, s->y, s->h1, s->out, s->d_g,
                    s->d_ln2, s->d_y, s->d_proj, s->d_ctx, s->d_qkv, s->d_ln1, s->dx, s->lse, s->attn_workspace};
    dev_free_all(bufs, COUNT_OF(bufs));
    void *attn8_bufs[] = {s->q8, s->k8, s->vt8, s->attn_meta[ATTN_Q], s->attn_meta[ATTN_K], s->attn_meta[ATTN_V]};
    dev_free_all(attn8_bufs, COUNT_OF(attn8_bufs));  // NULLs without --fp8-attention: nothing
    if (s->log) output_commit(s->log, scaling_csv);
    free(s);
}

// fp8_check_tolerance, and more with --fp8-attention (FP8_ATTENTION_EXTRA_TOLERANCE,
// steps/driver/fp8_step.h: where it comes from).
static double tolerance(const LayerConfig *cfg, int which) {
    const double base = fp8_step_tolerance(cfg, which);
    return fp8_attention ? base + FP8_ATTENTION_EXTRA_TOLERANCE : base;
}

static void reference(const LayerConfig *cfg, const LayerParams *p, const LayerInputs *in, uint64_t step,
                      LayerResults *res) {
    RefQuantizer q = fp8_first_step_quantizer(&recipe);
    ref_layer_train_step_quantized(cfg, p, in, step, &q, res);
}

static int parse_flag(const char *flag, const char *value) {
    if (!value) {  // the step's one switch
        if (strcmp(flag, "--fp8-attention") != 0) return 0;
        fp8_attention = 1;
        return 1;
    }
    if (fp8_recipe_parse_flag(&recipe, flag, value)) return 1;
    if (!strcmp(flag, "--fp8-log")) {
        output_check_writable(flag, value);  // now, not after the GPU work
        scaling_csv = value;
        return 1;
    }
    return 0;
}

const StepOps STEP_05_FP8 = {
    .id = "05_fp8",
    .title = "FP8 with delayed scaling",
    .whats_new = "the four Linears in FP8 (E4M3/E5M2), delayed scaling",
    .unsupported = unsupported,
    .create = create,
    .train_step = train_step,
    .read_results = read_results,
    .destroy = destroy,
    .parse_flag = parse_flag,
    .forward = forward,
    .backward = backward,
    .output = output,
    .load_params = load_params,
    .flags_help = FP8_RECIPE_FLAGS_HELP
                  "  --fp8-log FILE             write every FP8 tensor's amax and scale per step (CSV)\n"
                  "  --fp8-attention            attention's forward in FP8 too (opt-in): Q, K, V cast to E4M3\n"
                  "                             with delayed scaling, the FP8 flash forward (Hopper, compute\n"
                  "                             capability 9.0, a build with sm_90a code; head_dim 128; attention\n"
                  "                             dropout 0: --dropout 0 or --attn-dropout 0; not --causal);\n"
                  "                             the backward stays 16-bit. --check's tolerance grows by 5e-2\n",
    .tolerance = tolerance,
    .min_cc = GPU_ARCH_MIN_FP8,
    .flag_gpu_refusal = fp8_attention_gpu_refusal,
    .reference = reference,
    .variant = {LAYER_SERIAL, 1, 1},  // its four GEMMs in FP8, for --breakdown's floors
};
