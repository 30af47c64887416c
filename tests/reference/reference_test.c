// The CPU reference checked against finite differences, op by op and as a whole layer.
//
// Each check: a scalar loss L = sum(output * w) for fixed random weights w, whose gradient
// the backward functions give analytically; central differences (L(x+h) - L(x-h)) / 2h in
// double on a random sample of entries must agree. The reference stores float, so L carries
// rounding noise of ~1e-7 relative; with h = 1e-2 that puts the finite differences' own
// error near 1e-4 of the gradient, while a wrong formula is off by O(1). Hence the
// tolerance of 1e-3 on the norm-wise relative error over the sampled entries.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/errors.h"
#include "common/core/philox.h"
#include "reference/reference.h"
#include "tests/test_util.h"

static const double FD_STEP = 1e-2;
static const double FD_TOL = 1e-3;
static const int FD_SAMPLES = 24;

// A forward computation under test: reads its inputs (which FD perturbs), returns the loss.
typedef double (*LossFn)(void *ctx);

static double dot(const float *a, const float *b, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

// Compares the analytic gradient `grad` of `x` (n entries) with central differences of loss.
static void check_gradient(const char *what, float *x, const float *grad, int64_t n, LossFn loss,
                           void *ctx) {
    double diff = 0.0, norm = 0.0;
    int samples = n < FD_SAMPLES ? (int)n : FD_SAMPLES;
    for (int k = 0; k < samples; k++) {
        int64_t i = samples == n ? k : (int64_t)(philox4x32_10((uint64_t)k, 77, test_seed()).x[0] % (uint64_t)n);
        float saved = x[i];
        double h = FD_STEP * fmax(1.0, fabs(saved));
        x[i] = (float)(saved + h);
        double up = loss(ctx);
        x[i] = (float)(saved - h);
        double down = loss(ctx);
        x[i] = saved;
        double fd = (up - down) / (2.0 * h);
        diff += (fd - grad[i]) * (fd - grad[i]);
        norm += fd * fd;
    }
    double err = sqrt(diff / fmax(norm, 1e-30));
    print_message("  d/d%-24s fd vs analytic rel.err %.2e\n", what, err);
    if (!(err <= FD_TOL)) fail_msg("gradient of %s: relative error %.3e > %.1e", what, err, FD_TOL);
}

// ---- LayerNorm -------------------------------------------------------------------------------
typedef struct {
    int rows, cols;
    float *x, *gamma, *beta, *w, *y, *mean, *rstd;
} LnCtx;

static double ln_loss(void *p) {
    LnCtx *c = p;
    ref_layernorm_forward(c->x, c->gamma, c->beta, c->rows, c->cols, 1e-5f, c->y, c->mean, c->rstd);
    return dot(c->y, c->w, (int64_t)c->rows * c->cols);
}

static void test_layernorm(void **state) {
    (void)state;
    LnCtx c = {.rows = 5, .cols = 24};
    int64_t n = (int64_t)c.rows * c.cols;
    c.x = random_floats(n, -2, 2), c.gamma = random_floats(c.cols, 0.5f, 1.5f);
    c.beta = random_floats(c.cols, -1, 1), c.w = random_floats(n, -1, 1);
    c.y = xmalloc(n * sizeof(float)), c.mean = xmalloc(c.rows * sizeof(float)), c.rstd = xmalloc(c.rows * sizeof(float));
    ln_loss(&c);
    // Semantics: before the affine part, each row has mean 0 and variance 1.
    for (int r = 0; r < c.rows; r++) {
        double m = 0, v = 0;
        for (int k = 0; k < c.cols; k++) m += (c.x[r * c.cols + k] - c.mean[r]) * c.rstd[r];
        for (int k = 0; k < c.cols; k++) {
            double xh = (c.x[r * c.cols + k] - c.mean[r]) * c.rstd[r];
            v += xh * xh;
        }
        assert_true(fabs(m / c.cols) < 1e-5 && fabs(v / c.cols - 1.0) < 1e-3);
    }
    float *dx = xmalloc(n * sizeof(float)), *dg = xmalloc(c.cols * sizeof(float)), *db = xmalloc(c.cols * sizeof(float));
    ref_layernorm_backward(c.w, c.x, c.gamma, c.mean, c.rstd, c.rows, c.cols, dx, dg, db);
    check_gradient("x", c.x, dx, n, ln_loss, &c);
    check_gradient("gamma", c.gamma, dg, c.cols, ln_loss, &c);
    check_gradient("beta", c.beta, db, c.cols, ln_loss, &c);
    free(c.x); free(c.gamma); free(c.beta); free(c.w); free(c.y); free(c.mean); free(c.rstd);
    free(dx); free(dg); free(db);
}

// ---- Linear and GELU -------------------------------------------------------------------------
typedef struct {
    int rows, in, out;
    float *x, *wt, *b, *w, *y, *h;
} LinCtx;

static double linear_gelu_loss(void *p) {
    LinCtx *c = p;
    ref_linear_forward(c->x, c->wt, c->b, c->rows, c->in, c->out, c->h);
    ref_gelu_forward(c->h, (int64_t)c->rows * c->out, c->y);
    return dot(c->y, c->w, (int64_t)c->rows * c->out);
}

static void test_linear_gelu(void **state) {
    (void)state;
    LinCtx c = {.rows = 6, .in = 20, .out = 12};
    int64_t ny = (int64_t)c.rows * c.out;
    c.x = random_floats((int64_t)c.rows * c.in, -1, 1), c.wt = random_floats((int64_t)c.out * c.in, -0.5f, 0.5f);
    c.b = random_floats(c.out, -1, 1), c.w = random_floats(ny, -1, 1);
    c.y = xmalloc(ny * sizeof(float)), c.h = xmalloc(ny * sizeof(float));
    linear_gelu_loss(&c);
    float *dh = xmalloc(ny * sizeof(float)), *dx = xmalloc(c.rows * c.in * sizeof(float));
    float *dw = xmalloc(c.out * c.in * sizeof(float)), *db = xmalloc(c.out * sizeof(float));
    ref_gelu_backward(c.w, c.h, ny, dh);
    ref_linear_backward(dh, c.x, c.wt, c.rows, c.in, c.out, dx, dw, db);
    check_gradient("x", c.x, dx, (int64_t)c.rows * c.in, linear_gelu_loss, &c);
    check_gradient("weight", c.wt, dw, (int64_t)c.out * c.in, linear_gelu_loss, &c);
    check_gradient("bias", c.b, db, c.out, linear_gelu_loss, &c);
    // GELU(0) = 0, GELU(x) ~ x for large x, ~ 0 for very negative x.
    float probe[3] = {0.0f, 6.0f, -6.0f}, out[3];
    ref_gelu_forward(probe, 3, out);
    assert_true(out[0] == 0.0f && fabsf(out[1] - 6.0f) < 1e-4f && fabsf(out[2]) < 1e-4f);
    free(c.x); free(c.wt); free(c.b); free(c.w); free(c.y); free(c.h); free(dh); free(dx); free(dw); free(db);
}

// ---- Dropout -----------------------------------------------------------------------------
static void test_dropout(void **state) {
    (void)state;
    const int64_t n = 4096;
    float *x = random_floats(n, 0.5f, 1.5f), *y = xmalloc(n * sizeof(float));
    ref_dropout_forward(x, n, 0.0f, 1, 2, y);
    assert_memory_equal(x, y, n * sizeof(float));  // p = 0 is the identity
    ref_dropout_forward(x, n, 0.2f, 1, 2, y);
    const float scale = 256.0f / (256.0f - 51.0f);  // p = 0.2 is drawn as 51/256 (common/core/philox.h)
    assert_true(dropout_threshold(0.2f) == 51 && dropout_keep_scale(0.2f) == scale);
    int64_t dropped = 0;
    for (int64_t i = 0; i < n; i++) {
        int keep = dropout_keep(1, 2, (uint64_t)i, 0.2f);
        dropped += !keep;
        assert_true(keep ? fabsf(y[i] - x[i] * scale) < 1e-6f : y[i] == 0.0f);
    }
    assert_true(dropped > n / 10 && dropped < 3 * n / 10);
    free(x); free(y);
}

// ---- Attention ---------------------------------------------------------------------------
typedef struct {
    int seq, batch, heads, d, causal;
    float p;
    float *qkv, *w, *ctx, *probs;
} AttnCtx;

static double attention_loss(void *p) {
    AttnCtx *c = p;
    ref_attention_forward(c->qkv, c->seq, c->batch, c->heads, c->d, c->p, c->causal, 9, 4, c->ctx, c->probs);
    return dot(c->ctx, c->w, (int64_t)c->seq * c->batch * c->heads * c->d);
}

static void attention_case(int causal, float p) {
    AttnCtx c = {.seq = 7, .batch = 2, .heads = 2, .d = 8, .causal = causal, .p = p};
    int64_t nqkv = (int64_t)c.seq * c.batch * c.heads * 3 * c.d, nctx = nqkv / 3;
    c.qkv = random_floats(nqkv, -1, 1), c.w = random_floats(nctx, -1, 1);
    c.ctx = xmalloc(nctx * sizeof(float));
    c.probs = xmalloc((size_t)c.batch * c.heads * c.seq * c.seq * sizeof(float));
    attention_loss(&c);
    float *dqkv = xmalloc(nqkv * sizeof(float));
    ref_attention_backward(c.w, c.qkv, c.probs, c.seq, c.batch, c.heads, c.d, c.p, c.causal, 9, 4, dqkv);
    print_message(" attention causal %d dropout %.1f:\n", causal, p);
    check_gradient("qkv", c.qkv, dqkv, nqkv, attention_loss, &c);
    free(c.qkv); free(c.w); free(c.ctx); free(c.probs); free(dqkv);
}

static void test_attention_gradients(void **state) {
    (void)state;
    attention_case(0, 0.0f);
    attention_case(1, 0.0f);
    attention_case(0, 0.3f);
    attention_case(1, 0.3f);
}

// Semantics: rows of P sum to 1; causal query 0 sees only key 0, so its ctx is v_0; a
// dropped probability removes that key's value from the output.
static void test_attention_semantics(void **state) {
    (void)state;
    const int seq = 5, batch = 1, heads = 2, d = 4;
    int64_t nqkv = (int64_t)seq * batch * heads * 3 * d;
    float *qkv = random_floats(nqkv, -1, 1), *ctx = xmalloc(nqkv / 3 * sizeof(float));
    float *probs = xmalloc(batch * heads * seq * seq * sizeof(float));
    ref_attention_forward(qkv, seq, batch, heads, d, 0.0f, 1, 0, 0, ctx, probs);
    for (int r = 0; r < batch * heads * seq; r++) {
        double s = 0;
        for (int j = 0; j < seq; j++) s += probs[r * seq + j];
        assert_true(fabs(s - 1.0) < 1e-6);
    }
    for (int h = 0; h < heads; h++)
        for (int t = 0; t < d; t++)  // query 0 of head h: ctx = v of key 0
            assert_true(fabsf(ctx[h * d + t] - qkv[h * 3 * d + 2 * d + t]) < 1e-6f);
    // With dropout, the output of query i is sum_j keep_ij P_ij v_j / (1 - p): rebuild it
    // from the saved probabilities and the documented mask index, for head 1, query 3.
    const float p = 0.5f;
    ref_attention_forward(qkv, seq, batch, heads, d, p, 0, 21, 3, ctx, probs);
    int h = 1, i = 3;
    for (int t = 0; t < d; t++) {
        double acc = 0;
        for (int j = 0; j < seq; j++) {
            uint64_t index = attention_dropout_index((uint64_t)(0 * heads + h), i, j, seq);
            if (dropout_keep(21, 3, index, p))
                acc += probs[(h * seq + i) * seq + j] / (1.0 - p) * qkv[(j * heads + h) * 3 * d + 2 * d + t];
        }
        assert_true(fabs(ctx[(i * heads + h) * d + t] - acc) < 1e-5);
    }
    free(qkv); free(ctx); free(probs);
}

// ---- The whole layer -------------------------------------------------------------------------
typedef struct {
    LayerConfig cfg;
    LayerParams params;
    LayerInputs in;
    float *out;
} LayerCtx;

static double layer_loss(void *p) {
    LayerCtx *c = p;
    ref_layer_forward(&c->cfg, &c->params, c->in.x, 3, c->out);
    return dot(c->out, c->in.dy, layer_tokens(&c->cfg) * c->cfg.hidden);
}

static void layer_case(int causal) {
    LayerCtx c;
    layer_config_preset("tiny", &c.cfg);
    c.cfg.hidden = 32, c.cfg.ffn = 64, c.cfg.heads = 2, c.cfg.seq = 6, c.cfg.batch = 2;
    c.cfg.causal = causal;
    c.cfg.seed = test_seed();
    layer_params_alloc(&c.cfg, &c.params);
    layer_params_init_random(&c.cfg, test_seed(), &c.params);
    layer_inputs_alloc(&c.cfg, &c.in);
    layer_inputs_init_random(&c.cfg, test_seed() + 1, &c.in);
    for (int64_t i = 0; i < layer_tokens(&c.cfg) * c.cfg.hidden; i++) c.in.dy[i] -= 0.5f;
    c.out = xmalloc((size_t)(layer_tokens(&c.cfg) * c.cfg.hidden) * sizeof(float));
    LayerResults r;
    layer_results_alloc(&c.cfg, &r);
    ref_layer_train_step(&c.cfg, &c.params, &c.in, 3, &r);
    // train_step's forward is the forward.
    layer_loss(&c);
    assert_memory_equal(c.out, r.out, (size_t)(layer_tokens(&c.cfg) * c.cfg.hidden) * sizeof(float));
    print_message(" whole layer, causal %d, dropout %.1f:\n", causal, c.cfg.attn_dropout);
    check_gradient("x", c.in.x, r.dx, layer_tokens(&c.cfg) * c.cfg.hidden, layer_loss, &c);
    for (int i = 0; i < NUM_PARAMS; i++)
        check_gradient(PARAM_NAMES[i], c.params.tensor[i], r.grad.tensor[i], param_numel(&c.cfg, i),
                       layer_loss, &c);
    layer_results_free(&r);
    layer_params_free(&c.params);
    layer_inputs_free(&c.in);
    free(c.out);
}

static void test_layer_gradients(void **state) {
    (void)state;
    layer_case(0);
    layer_case(1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layernorm),           cmocka_unit_test(test_linear_gelu),
        cmocka_unit_test(test_dropout),             cmocka_unit_test(test_attention_gradients),
        cmocka_unit_test(test_attention_semantics), cmocka_unit_test(test_layer_gradients),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
