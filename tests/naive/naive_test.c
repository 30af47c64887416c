// Step 01's kernels, its cuBLAS Linear and its attention module against the CPU reference,
// and the whole step: fresh random data each run, fp16 and bf16.
#include <stdlib.h>

#include "common/gpu.h"
#include "common/reference.h"
#include "common/step.h"
#include "kernels/naive/cublas_linear.h"
#include "kernels/naive/naive_attention.h"
#include "kernels/naive/naive_ops.h"
#include "steps/01_naive/step01.h"
#include "tests/test_util.h"

// Tolerances on ||gpu - ref|| / ||ref||: the inputs are exactly representable, so the error
// is the storage rounding of the output (fp16: 2^-11 relative per element at worst, bf16:
// 2^-8) plus float32 arithmetic: a few times the unit roundoff covers it.
static double tol(DType dt) { return dt == DTYPE_BF16 ? 1e-2 : 2e-3; }

static float *random_in(int64_t n, float lo, float hi, DType dt) {
    float *x = random_floats(n, lo, hi);
    round_to_dtype(x, n, dt);
    return x;
}

static float *download(const void *dev, int64_t n, DType dt) {
    float *x = malloc((size_t)n * sizeof(float));
    dev_download(x, dev, n, dt);
    return x;
}

static void test_layernorm(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    const int rows = 77, cols = 520;
    const int64_t n = (int64_t)rows * cols;
    for (int d = 0; d < 2; d++) {
        DType dt = d ? DTYPE_BF16 : DTYPE_FP16;
        float *x = random_in(n, -2, 3, dt), *g = random_in(cols, 0.5f, 1.5f, dt);
        float *b = random_in(cols, -1, 1, dt), *dy = random_in(n, -1, 1, dt);
        float *y = malloc(n * 4), *mean = malloc(rows * 4), *rstd = malloc(rows * 4);
        float *dx = malloc(n * 4), *dg = malloc(cols * 4), *db = malloc(cols * 4);
        ref_layernorm_forward(x, g, b, rows, cols, 1e-5f, y, mean, rstd);
        ref_layernorm_backward(dy, x, g, mean, rstd, rows, cols, dx, dg, db);
        void *d_x = dev_upload(x, n, dt), *d_g = dev_upload(g, cols, dt), *d_b = dev_upload(b, cols, dt);
        void *d_dy = dev_upload(dy, n, dt), *d_y = dev_alloc(n * 2), *d_dx = dev_alloc(n * 2);
        void *d_dg = dev_alloc(cols * 2), *d_db = dev_alloc(cols * 2);
        float *d_mean = dev_alloc(rows * 4), *d_rstd = dev_alloc(rows * 4);
        naive_layernorm_forward(d_x, d_g, d_b, d_y, d_mean, d_rstd, rows, cols, 1e-5f, dt);
        naive_layernorm_backward(d_dy, d_x, d_g, d_mean, d_rstd, d_dx, d_dg, d_db, rows, cols, dt);
        float *got;
        got = download(d_y, n, dt); assert_rel_error(got, y, n, tol(dt)); free(got);
        got = download(d_dx, n, dt); assert_rel_error(got, dx, n, tol(dt)); free(got);
        got = download(d_dg, cols, dt); assert_rel_error(got, dg, cols, tol(dt)); free(got);
        got = download(d_db, cols, dt); assert_rel_error(got, db, cols, tol(dt)); free(got);
        float *m = malloc(rows * 4);
        dev_download_f32(m, d_mean, rows);
        assert_rel_error(m, mean, rows, 1e-5);
        free(m);
        void *all[] = {d_x, d_g, d_b, d_dy, d_y, d_dx, d_dg, d_db, d_mean, d_rstd};
        for (int i = 0; i < 10; i++) dev_free(all[i]);
        free(x); free(g); free(b); free(dy); free(y); free(mean); free(rstd); free(dx); free(dg); free(db);
    }
}

static void test_linear_gelu_dropout(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    const int m = 96, k = 136, n = 72;
    for (int d = 0; d < 2; d++) {
        DType dt = d ? DTYPE_BF16 : DTYPE_FP16;
        float *x = random_in(m * k, -1, 1, dt), *w = random_in(n * k, -0.3f, 0.3f, dt);
        float *b = random_in(n, -1, 1, dt), *dy = random_in(m * n, -1, 1, dt);
        float *y = malloc(m * n * 4), *dx = malloc(m * k * 4), *dw = malloc(n * k * 4), *db = malloc(n * 4);
        ref_linear_forward(x, w, b, m, k, n, y);
        ref_linear_backward(dy, x, w, m, k, n, dx, dw, db);
        void *d_x = dev_upload(x, m * k, dt), *d_w = dev_upload(w, n * k, dt), *d_b = dev_upload(b, n, dt);
        void *d_dy = dev_upload(dy, m * n, dt), *d_y = dev_alloc(m * n * 2), *d_dx = dev_alloc(m * k * 2);
        void *d_dw = dev_alloc(n * k * 2), *d_db = dev_alloc(n * 2);
        cublas_linear_forward(d_x, d_w, d_y, m, k, n, dt);
        naive_bias_add(d_y, d_b, m, n, dt);
        cublas_linear_backward_input(d_dy, d_w, d_dx, m, k, n, dt);
        cublas_linear_backward_weight(d_dy, d_x, d_dw, m, k, n, dt);
        naive_bias_grad(d_dy, d_db, m, n, dt);
        float *got;
        got = download(d_y, m * n, dt); assert_rel_error(got, y, m * n, tol(dt)); free(got);
        got = download(d_dx, m * k, dt); assert_rel_error(got, dx, m * k, tol(dt)); free(got);
        got = download(d_dw, n * k, dt); assert_rel_error(got, dw, n * k, tol(dt)); free(got);
        got = download(d_db, n, dt); assert_rel_error(got, db, n, tol(dt)); free(got);
        // GELU forward/backward and dropout on y's values.
        float *yr = download(d_y, m * n, dt);
        float *gy = malloc(m * n * 4), *gdx = malloc(m * n * 4), *dr = malloc(m * n * 4);
        ref_gelu_forward(yr, m * n, gy);
        ref_gelu_backward(dy, yr, m * n, gdx);
        ref_dropout_forward(yr, m * n, 0.3f, 5, 6, dr);
        naive_gelu_forward(d_y, d_dx, m * n, dt);
        got = download(d_dx, m * n, dt); assert_rel_error(got, gy, m * n, tol(dt)); free(got);
        naive_gelu_backward(d_dy, d_y, d_dx, m * n, dt);
        got = download(d_dx, m * n, dt); assert_rel_error(got, gdx, m * n, tol(dt)); free(got);
        naive_dropout(d_y, d_dx, m * n, 0.3f, 5, 6, dt);
        got = download(d_dx, m * n, dt); assert_rel_error(got, dr, m * n, tol(dt)); free(got);
        void *all[] = {d_x, d_w, d_b, d_dy, d_y, d_dx, d_dw, d_db};
        for (int i = 0; i < 8; i++) dev_free(all[i]);
        free(x); free(w); free(b); free(dy); free(y); free(dx); free(dw); free(db);
        free(yr); free(gy); free(gdx); free(dr);
    }
}

static void attention_case(DType dt, int seq, int heads, int d, float p, int causal) {
    LayerConfig cfg;
    layer_config_preset("tiny", &cfg);
    cfg.seq = seq, cfg.batch = 2, cfg.heads = heads, cfg.hidden = heads * d, cfg.dtype = dt;
    cfg.attn_dropout = p, cfg.causal = causal, cfg.seed = test_seed();
    const int64_t nqkv = (int64_t)seq * cfg.batch * cfg.hidden * 3, nctx = nqkv / 3;
    float *qkv = random_in(nqkv, -1.5f, 1.5f, dt), *dctx = random_in(nctx, -1, 1, dt);
    float *ctx = malloc(nctx * 4), *dqkv = malloc(nqkv * 4);
    float *probs = malloc((size_t)cfg.batch * heads * seq * seq * 4);
    ref_attention_forward(qkv, seq, cfg.batch, heads, d, p, causal, cfg.seed, 7, ctx, probs);
    ref_attention_backward(dctx, qkv, probs, seq, cfg.batch, heads, d, p, causal, cfg.seed, 7, dqkv);
    NaiveAttention a;
    naive_attention_init(&a, &cfg);
    void *d_qkv = dev_upload(qkv, nqkv, dt), *d_dctx = dev_upload(dctx, nctx, dt);
    void *d_ctx = dev_alloc(nctx * 2), *d_dqkv = dev_alloc(nqkv * 2);
    naive_attention_forward(&a, d_qkv, d_ctx, 7);
    naive_attention_backward(&a, d_qkv, d_dctx, d_dqkv, 7);
    print_message(" attention %s seq %d heads %d d %d dropout %.1f causal %d\n", dtype_name(dt), seq,
                  heads, d, p, causal);
    float *got = download(d_ctx, nctx, dt);
    assert_rel_error(got, ctx, nctx, 2 * tol(dt));
    free(got);
    got = download(d_dqkv, nqkv, dt);
    assert_rel_error(got, dqkv, nqkv, 4 * tol(dt));  // through two GEMMs and the softmax
    free(got);
    naive_attention_free(&a);
    dev_free(d_qkv); dev_free(d_dctx); dev_free(d_ctx); dev_free(d_dqkv);
    free(qkv); free(dctx); free(ctx); free(dqkv); free(probs);
}

static void test_attention(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    attention_case(DTYPE_FP16, 64, 2, 64, 0.0f, 0);
    attention_case(DTYPE_FP16, 100, 3, 64, 0.1f, 1);
    attention_case(DTYPE_BF16, 72, 2, 128, 0.1f, 0);
    attention_case(DTYPE_BF16, 50, 2, 32, 0.2f, 1);
}

static void whole_step(DType dt, int causal) {
    LayerConfig cfg;
    layer_config_preset("small", &cfg);
    cfg.dtype = dt, cfg.causal = causal, cfg.seed = test_seed();
    LayerParams p;
    LayerInputs in;
    layer_params_alloc(&cfg, &p);
    layer_params_init_random(&cfg, cfg.seed, &p);
    layer_params_round(&cfg, &p);
    layer_inputs_alloc(&cfg, &in);
    layer_inputs_init_random(&cfg, cfg.seed + 1, &in);
    layer_inputs_round(&cfg, &in);
    StepReport r = {0};
    step_check(&STEP_01_NAIVE, &cfg, &p, &in, stdout, &r);
    print_message(" step 01 %s causal %d: max rel.err %.3e\n", dtype_name(dt), causal, r.max_rel_error);
    assert_int_equal(r.check_passed, 1);
    layer_params_free(&p);
    layer_inputs_free(&in);
}

static void test_whole_step(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    whole_step(DTYPE_FP16, 0);
    whole_step(DTYPE_BF16, 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layernorm),
        cmocka_unit_test(test_linear_gelu_dropout),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_whole_step),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
