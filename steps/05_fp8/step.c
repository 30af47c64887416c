// Step 05: step 04's layer with its four Linears in FP8, scaled by delayed scaling - as TE's
// fp8_autocast(recipe=DelayedScaling(...)). Attention stays in fp16/bf16 (TE's default).
//
//   x -> LN1 -> [FP8 Linear qkv] -> flash attention -> [FP8 Linear proj] -> bias+dropout+x -> y
//   y -> LN2 -> [FP8 Linear fc1] -> GELU -> [FP8 Linear fc2] -> +y -> out
// (GELU is applied by fc2's cast to FP8: its output never exists in 16 bits.)
// After each training step every FP8 tensor's scale is updated from its amax history on the
// GPU (modules/fp8_linear.c). --check compares with the CPU reference whose Linears
// round their operands to FP8 with the same scales (1 at the first step), so FP8's own error
// is not waved through a loose tolerance.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/errors.h"
#include "common/core/gpu_arch.h"
#include "common/fp8/fp8_format.h"
#include "common/fp8/fp8_recipe.h"
#include "steps/driver/fp8_step.h"
#include "common/gpu/gpu.h"
#include "common/io/output_file.h"
#include "modules/fp8_linear.h"
#include "modules/layernorm.h"
#include "common/core/philox.h"
#include "reference/reference.h"
#include "kernels/attention/attention.h"
#include "kernels/fused/elementwise.h"
#include "steps/05_fp8/step05.h"

static DelayedScaling recipe = {FP8_RECIPE_HYBRID, 0, 16, AMAX_ALGO_MAX};
static const char *scaling_csv;  // --fp8-log FILE: per step, every FP8 tensor's amax and scale

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
    void *attn_workspace;
    FILE *log;
    uint64_t steps_done;
} Step05;

static const char *unsupported(const LayerConfig *c) {
    const AttentionProblem attn = attention_layer_problem(c);
    const char *why = attention_unsupported(&attn);
    if (!why) why = layernorm_unsupported(c->hidden);
    return why ? why : fp8_layer_unsupported(c);
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
    if (scaling_csv) {  // written beside and renamed at destroy: whole or not at all
        s->log = output_open(scaling_csv, "w");
        fprintf(s->log, "step,linear,tensor,amax,scale\n");
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
    attention_forward(&s->attn, &attn_dropout, s->qkv, s->ctx, s->lse);
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
    attention_backward(&s->attn, &attn_dropout, s->qkv, s->ctx, s->d_ctx, s->lse, s->d_qkv, s->attn_workspace);
    fp8_linear_backward(&s->lin[QKV], s->d_qkv, s->d_ln1, t);
    layernorm_backward(&s->ln1, s->d_ln1, s->d_y, s->dx, t);
    // Delayed scaling: the next step's scales from this step's (and earlier) amaxes.
    if (s->log) log_scaling(s);
    for (int l = 0; l < NUM_LINEARS; l++) fp8_linear_update_scales(&s->lin[l]);
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
    if (s->log) output_commit(s->log, scaling_csv);
    free(s);
}

static void reference(const LayerConfig *cfg, const LayerParams *p, const LayerInputs *in, uint64_t step,
                      LayerResults *res) {
    RefQuantizer q = fp8_first_step_quantizer(&recipe);
    ref_layer_train_step_quantized(cfg, p, in, step, &q, res);
}

static int parse_flag(const char *flag, const char *value) {
    if (!value) return 0;
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
                  "  --fp8-log FILE             write every FP8 tensor's amax and scale per step (CSV)\n",
    .tolerance = fp8_step_tolerance,
    .min_cc = GPU_ARCH_MIN_FP8,
    .reference = reference,
    .variant = {LAYER_SERIAL, 1, 1},  // its four GEMMs in FP8, for --breakdown's floors
};
