#include "common/core/layer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/errors.h"
#include "common/core/half.h"
#include "common/core/philox.h"

const char *const PARAM_NAMES[NUM_PARAMS] = {
    "ln1.weight",         "ln1.bias",          "qkv_projection.weight", "qkv_projection.bias",
    "projection.weight",  "projection.bias",   "ln2.weight",            "ln2.bias",
    "mlp.linear1.weight", "mlp.linear1.bias",  "mlp.linear2.weight",    "mlp.linear2.bias",
};

const char *dtype_name(DType dtype) { return dtype == DTYPE_BF16 ? "bf16" : "fp16"; }

double dtype_max(DType dtype) { return dtype == DTYPE_BF16 ? 3.3895313892515355e38 : 65504.0; }

int64_t first_value_outside_dtype(const float *x, int64_t n, DType dtype) {
    for (int64_t i = 0; i < n; i++) {
        float r = x[i];
        round_to_dtype(&r, 1, dtype);
        if (!isfinite(r)) return i;  // also catches NaN and inf in x itself
    }
    return -1;
}

LayerConfig layer_config_quickstart(void) {
    LayerConfig c = {
        .hidden = 4096, .ffn = 16384, .heads = 32, .seq = 2048, .batch = 4,
        .dtype = DTYPE_FP16, .attn_dropout = 0.1f, .hidden_dropout = 0.1f,
        .eps = 1e-5f, .causal = 0, .seed = 1234,
    };
    return c;
}

int layer_config_preset(const char *name, LayerConfig *out) {
    LayerConfig c = layer_config_quickstart();
    if (!strcmp(name, "quickstart")) {
        *out = c;
        return 1;
    }
    if (!strcmp(name, "small")) {  // the --check configuration: seconds on the CPU
        c.hidden = 256, c.ffn = 1024, c.heads = 4, c.seq = 128, c.batch = 2;
        *out = c;
        return 1;
    }
    if (!strcmp(name, "tiny")) {  // gradient checks and CPU-only runs
        c.hidden = 128, c.ffn = 512, c.heads = 2, c.seq = 16, c.batch = 2;
        *out = c;
        return 1;
    }
    return 0;
}

const char *layer_config_problem(const LayerConfig *c) {
    static char msg[640];
    if (c->hidden <= 0 || c->ffn <= 0 || c->heads <= 0 || c->seq <= 0 || c->batch <= 0) {
        snprintf(msg, sizeof msg, "hidden, ffn, heads, seq and batch must all be positive "
                 "(got %d, %d, %d, %d, %d)", c->hidden, c->ffn, c->heads, c->seq, c->batch);
        return msg;
    }
    if (c->hidden % c->heads != 0) {
        snprintf(msg, sizeof msg, "hidden (%d) must be divisible by heads (%d)", c->hidden, c->heads);
        return msg;
    }
    if (c->hidden % 8 != 0 || c->ffn % 8 != 0) {
        snprintf(msg, sizeof msg, "hidden (%d) and ffn (%d) must be multiples of 8 "
                 "(16-byte aligned rows for the tensor cores)", c->hidden, c->ffn);
        return msg;
    }
    if (layer_tokens(c) > LAYER_MAX_TOKENS) {
        snprintf(msg, sizeof msg, "seq * batch = %d * %d = %lld tokens, more than the %lld that 32-bit "
                 "sizes allow (cuBLAS's GEMM sizes, a kernel grid's rows)",
                 c->seq, c->batch, (long long)layer_tokens(c), LAYER_MAX_TOKENS);
        return msg;
    }
    const char *why = dropout_problem(c->attn_dropout);
    if (!why) why = dropout_problem(c->hidden_dropout);
    if (why) {
        snprintf(msg, sizeof msg, "dropout: %s", why);
        return msg;
    }
    if (!(c->eps > 0.0f)) {
        snprintf(msg, sizeof msg, "eps must be positive (got %g)", c->eps);
        return msg;
    }
    return NULL;
}

double dropout_used(float p) { return dropout_threshold(p) / 256.0; }

const char *dropout_problem(float p) {
    static char msg[512];
    if (!(p >= 0.0f && p < 1.0f)) {
        snprintf(msg, sizeof msg, "a dropout probability must be in [0, 1), got %g", p);
        return msg;
    }
    if (p == 0.0f) return NULL;
    const double used = dropout_used(p);
    const double drop_change = fabs(used - p) / p, keep_change = fabs((1.0 - used) - (1.0 - p)) / (1.0 - p);
    if (drop_change <= DROPOUT_MAX_CHANGE && keep_change <= DROPOUT_MAX_CHANGE) return NULL;
    // The two multiples of 1/256 around p run exactly as asked (0% change): offer those.
    const int below = (int)floor(p * 256.0), above = below + 1;
    char offer[96];
    if (below == 0) snprintf(offer, sizeof offer, "the smallest is 1/256 = %.5g", 1.0 / 256.0);
    else if (above >= 256) snprintf(offer, sizeof offer, "the largest is 255/256 = %.5g", 255.0 / 256.0);
    else snprintf(offer, sizeof offer, "e.g. %d/256 = %.5g or %d/256 = %.5g", below, below / 256.0, above, above / 256.0);
    snprintf(msg, sizeof msg,
             "probability %g cannot be used: dropout draws one random byte per element, so it runs at a "
             "multiple of 1/256, and the nearest, %d/256 = %.4g, changes the %s probability by %.0f%% (at most "
             "%.0f%% is allowed). Use 0 or a multiple of 1/256 (%s)",
             p, (int)dropout_threshold(p), used, drop_change > keep_change ? "drop" : "keep",
             100.0 * fmax(drop_change, keep_change), 100.0 * DROPOUT_MAX_CHANGE, offer);
    return msg;
}

double layer_host_bytes(const LayerConfig *c, int check) {
    double params = 0;
    for (int i = 0; i < NUM_PARAMS; i++) params += (double)param_numel(c, i);
    const double t = (double)layer_tokens(c), h = c->hidden, f = c->ffn;
    const double inputs = 2 * t * h, results = params + 2 * t * h;
    double floats = params + inputs + results;
    if (check) {
        // The reference's own results, and what its forward keeps: LN1, qkv, ctx, proj, y,
        // LN2 (9 t h in all), FC1 and GELU (2 t f), and the attention probabilities.
        const double probs = (double)c->batch * c->heads * (double)c->seq * c->seq;
        floats += results + 9 * t * h + 2 * t * f + probs;
    }
    return 4.0 * floats;
}

double layer_train_flops(const LayerConfig *c) {
    double t = (double)layer_tokens(c), h = c->hidden, f = c->ffn;
    double linear = 2.0 * t * h * (3.0 * h + h + 2.0 * f);
    double attention = 4.0 * c->batch * (double)c->seq * c->seq * h;
    if (c->causal) attention *= 0.5;
    return 3.0 * (linear + attention);
}

int param_shape(const LayerConfig *c, int id, int64_t shape[2]) {
    int64_t h = c->hidden, f = c->ffn;
    switch (id) {
        case P_LN1_WEIGHT: case P_LN1_BIAS: case P_LN2_WEIGHT: case P_LN2_BIAS:
        case P_PROJ_BIAS: case P_FC2_BIAS:
            shape[0] = h; return 1;
        case P_QKV_WEIGHT: shape[0] = 3 * h; shape[1] = h; return 2;
        case P_QKV_BIAS: shape[0] = 3 * h; return 1;
        case P_PROJ_WEIGHT: shape[0] = h; shape[1] = h; return 2;
        case P_FC1_WEIGHT: shape[0] = f; shape[1] = h; return 2;
        case P_FC1_BIAS: shape[0] = f; return 1;
        case P_FC2_WEIGHT: shape[0] = h; shape[1] = f; return 2;
        default: DIE("unknown parameter id %d", id);
    }
}

int64_t param_numel(const LayerConfig *c, int id) {
    int64_t shape[2];
    int ndim = param_shape(c, id, shape);
    return ndim == 1 ? shape[0] : shape[0] * shape[1];
}

void layer_params_alloc(const LayerConfig *c, LayerParams *p) {
    for (int i = 0; i < NUM_PARAMS; i++)
        p->tensor[i] = xcalloc((size_t)param_numel(c, i), sizeof(float));
}

void layer_params_free(LayerParams *p) {
    for (int i = 0; i < NUM_PARAMS; i++) {
        free(p->tensor[i]);
        p->tensor[i] = NULL;
    }
}

void fill_uniform(float *x, int64_t n, float lo, float hi, uint64_t seed, uint64_t stream) {
    // Counter = (i / 4, stream) under key = seed: the same values whatever the caller's order.
    for (int64_t i = 0; i < n; i += 4) {
        Philox4 r = philox4x32_10((uint64_t)i >> 2, stream | (1ull << 63), seed);
        for (int j = 0; j < 4 && i + j < n; j++)
            x[i + j] = lo + (hi - lo) * philox_to_unit_float(r.x[j]);
    }
}

void layer_params_init_random(const LayerConfig *c, uint64_t seed, LayerParams *p) {
    for (int i = 0; i < NUM_PARAMS; i++) {
        int64_t n = param_numel(c, i);
        float *t = p->tensor[i];
        if (i == P_LN1_WEIGHT || i == P_LN2_WEIGHT) {
            fill_uniform(t, n, 0.9f, 1.1f, seed, 100 + i);
        } else if (i == P_LN1_BIAS || i == P_LN2_BIAS) {
            fill_uniform(t, n, -0.1f, 0.1f, seed, 100 + i);
        } else {  // a Linear's weight or bias: bound 1/sqrt(fan_in), as torch.nn.Linear
            int fan_in = (i == P_FC2_WEIGHT || i == P_FC2_BIAS) ? c->ffn : c->hidden;
            float bound = 1.0f / sqrtf((float)fan_in);
            fill_uniform(t, n, -bound, bound, seed, 100 + i);
        }
    }
}

void layer_inputs_alloc(const LayerConfig *c, LayerInputs *in) {
    size_t n = (size_t)(layer_tokens(c) * c->hidden);
    in->x = xcalloc(n, sizeof(float));
    in->dy = xcalloc(n, sizeof(float));
}

void layer_inputs_free(LayerInputs *in) {
    free(in->x);
    free(in->dy);
    in->x = in->dy = NULL;
}

void layer_inputs_init_random(const LayerConfig *c, uint64_t seed, LayerInputs *in) {
    int64_t n = layer_tokens(c) * c->hidden;
    fill_uniform(in->x, n, 0.0f, 1.0f, seed, 1);
    fill_uniform(in->dy, n, 0.0f, 1.0f, seed, 2);
}

void layer_results_alloc(const LayerConfig *c, LayerResults *r) {
    size_t n = (size_t)(layer_tokens(c) * c->hidden);
    r->out = xcalloc(n, sizeof(float));
    r->dx = xcalloc(n, sizeof(float));
    layer_params_alloc(c, &r->grad);
}

void layer_results_free(LayerResults *r) {
    free(r->out);
    free(r->dx);
    r->out = r->dx = NULL;
    layer_params_free(&r->grad);
}

void round_to_dtype(float *x, int64_t n, DType dtype) {
    for (int64_t i = 0; i < n; i++)
        x[i] = dtype == DTYPE_BF16 ? bf16_to_float(float_to_bf16(x[i]))
                                   : fp16_to_float(float_to_fp16(x[i]));
}

void layer_params_round(const LayerConfig *c, LayerParams *p) {
    for (int i = 0; i < NUM_PARAMS; i++) round_to_dtype(p->tensor[i], param_numel(c, i), c->dtype);
}

void layer_inputs_round(const LayerConfig *c, LayerInputs *in) {
    int64_t n = layer_tokens(c) * c->hidden;
    round_to_dtype(in->x, n, c->dtype);
    round_to_dtype(in->dy, n, c->dtype);
}

void layer_problem_init_random(const LayerConfig *c, LayerParams *p, LayerInputs *in) {
    layer_params_alloc(c, p);
    layer_params_init_random(c, c->seed, p);
    layer_params_round(c, p);
    layer_inputs_alloc(c, in);
    layer_inputs_init_random(c, c->seed + 1, in);
    layer_inputs_round(c, in);
}
