// Graded: exercise "fused_weights" (exercises/fused_weights.c), chapter 06.
//
// The fused layout element by element (each failure names the element and where it should have
// come from), the way back, and what the layout is for: the fused training step computing the
// same outputs and gradients as the separate one. Shapes are deliberately uneven (h = 12,
// ffn = 20, 3 heads), so that mixing up h, 3h and ffn shows. Each test case is one point.
#include <stdlib.h>
#include <string.h>

#include "common/core/errors.h"
#include "reference/parallel_reference.h"
#include "reference/reference.h"
#include "tests/exercises/grading.h"
#include "tests/test_util.h"

typedef struct {
    LayerConfig cfg;
    LayerParams p;       // separate weights, random
    FusedParallelParams f;  // fused by the code under test (NaN before)
} Problem;

static void make(Problem *pr) {
    layer_config_preset("tiny", &pr->cfg);
    pr->cfg.hidden = 12, pr->cfg.ffn = 20, pr->cfg.heads = 3, pr->cfg.seq = 5, pr->cfg.batch = 2;
    pr->cfg.seed = test_seed();
    layer_params_alloc(&pr->cfg, &pr->p);
    layer_params_init_random(&pr->cfg, test_seed() + 7, &pr->p);
    fused_parallel_alloc(&pr->cfg, &pr->f);
    const int64_t h = pr->cfg.hidden, n_in = 3 * h + pr->cfg.ffn, k_out = h + pr->cfg.ffn;
    fill_nan(pr->f.ln_weight, h), fill_nan(pr->f.ln_bias, h);
    fill_nan(pr->f.w_in, n_in * h), fill_nan(pr->f.b_in, n_in);
    fill_nan(pr->f.w_out, h * k_out), fill_nan(pr->f.b_out, h);
    fuse_parallel_params(&pr->cfg, &pr->p, &pr->f);
}

static void drop(Problem *pr) {
    layer_params_free(&pr->p);
    fused_parallel_free(&pr->f);
}

// W_in [3h + ffn, h]: rows 0..3h-1 are qkv.weight's rows, the next ffn rows fc1.weight's.
static void test_w_in_stacks_qkv_then_fc1(void **state) {
    (void)state;
    Problem pr;
    make(&pr);
    const int64_t h = pr.cfg.hidden, ffn = pr.cfg.ffn;
    for (int64_t row = 0; row < 3 * h + ffn; row++)
        for (int64_t col = 0; col < h; col++) {
            const int fc1 = row >= 3 * h;
            const int64_t src_row = fc1 ? row - 3 * h : row;
            expect_float_eq(pr.f.w_in[row * h + col], pr.p.tensor[fc1 ? P_FC1_WEIGHT : P_QKV_WEIGHT][src_row * h + col],
                            "w_in[%lld][%lld] (W_in = [W_qkv ; W_fc1], [3h + ffn, h] = [%lld, %lld]) should be "
                            "%s.weight[%lld][%lld]",
                            (long long)row, (long long)col, (long long)(3 * h + ffn), (long long)h,
                            fc1 ? "fc1" : "qkv", (long long)src_row, (long long)col);
        }
    for (int64_t i = 0; i < 3 * h + ffn; i++) {
        const int fc1 = i >= 3 * h;
        expect_float_eq(pr.f.b_in[i], pr.p.tensor[fc1 ? P_FC1_BIAS : P_QKV_BIAS][fc1 ? i - 3 * h : i],
                        "b_in[%lld] should be %s.bias[%lld]", (long long)i, fc1 ? "fc1" : "qkv",
                        (long long)(fc1 ? i - 3 * h : i));
    }
    drop(&pr);
}

// W_out [h, h + ffn]: in each row, columns 0..h-1 are proj.weight's, the next ffn fc2.weight's.
static void test_w_out_puts_proj_and_fc2_side_by_side(void **state) {
    (void)state;
    Problem pr;
    make(&pr);
    const int64_t h = pr.cfg.hidden, ffn = pr.cfg.ffn, k_out = h + ffn;
    for (int64_t row = 0; row < h; row++)
        for (int64_t col = 0; col < k_out; col++) {
            const int fc2 = col >= h;
            const int64_t src_col = fc2 ? col - h : col, src_cols = fc2 ? ffn : h;
            expect_float_eq(pr.f.w_out[row * k_out + col],
                            pr.p.tensor[fc2 ? P_FC2_WEIGHT : P_PROJ_WEIGHT][row * src_cols + src_col],
                            "w_out[%lld][%lld] (W_out = [W_proj | W_fc2], [h, h + ffn] = [%lld, %lld]) should be "
                            "%s.weight[%lld][%lld]",
                            (long long)row, (long long)col, (long long)h, (long long)k_out, fc2 ? "fc2" : "proj",
                            (long long)row, (long long)src_col);
        }
    drop(&pr);
}

// b_out = b_proj + b_fc2 (one GEMM adds both branches, so both biases), and LN1's parameters.
static void test_b_out_and_layernorm(void **state) {
    (void)state;
    Problem pr;
    make(&pr);
    const int64_t h = pr.cfg.hidden;
    for (int64_t o = 0; o < h; o++) {
        const float bp = pr.p.tensor[P_PROJ_BIAS][o], bf = pr.p.tensor[P_FC2_BIAS][o];
        expect_float_eq(pr.f.b_out[o], bp + bf, "b_out[%lld] should be proj.bias + fc2.bias = %g + %g", (long long)o,
                        bp, bf);
        expect_float_eq(pr.f.ln_weight[o], pr.p.tensor[P_LN1_WEIGHT][o], "ln_weight[%lld] should be ln1.weight[%lld]",
                        (long long)o, (long long)o);
        expect_float_eq(pr.f.ln_bias[o], pr.p.tensor[P_LN1_BIAS][o], "ln_bias[%lld] should be ln1.bias[%lld]",
                        (long long)o, (long long)o);
    }
    drop(&pr);
}

// fused -> separate gives back every weight; b_out all in b_proj, b_fc2 zero.
static void test_unfuse_gives_the_weights_back(void **state) {
    (void)state;
    Problem pr;
    make(&pr);
    const LayerConfig *c = &pr.cfg;
    LayerParams back;
    layer_params_alloc(c, &back);
    const int written[] = {P_LN1_WEIGHT, P_LN1_BIAS, P_QKV_WEIGHT, P_QKV_BIAS, P_PROJ_WEIGHT, P_PROJ_BIAS,
                           P_FC1_WEIGHT, P_FC1_BIAS, P_FC2_WEIGHT, P_FC2_BIAS};
    const int n_written = (int)(sizeof written / sizeof written[0]);
    for (int i = 0; i < n_written; i++) fill_nan(back.tensor[written[i]], param_numel(c, written[i]));
    unfuse_parallel_params(c, &pr.f, &back);
    for (int i = 0; i < n_written; i++) {
        const int id = written[i];
        for (int64_t e = 0; e < param_numel(c, id); e++) {
            float want = pr.p.tensor[id][e];
            const char *why = "";
            if (id == P_PROJ_BIAS) want = pr.f.b_out[e], why = " (= b_out: all of it goes to proj.bias)";
            if (id == P_FC2_BIAS) want = 0.0f, why = " (b_out cannot be split back: fc2.bias is zero)";
            int64_t shape[2];
            const int ndim = param_shape(c, id, shape);
            if (ndim == 2)
                expect_float_eq(back.tensor[id][e], want, "after unfuse, %s[%lld][%lld]%s", PARAM_NAMES[id],
                                (long long)(e / shape[1]), (long long)(e % shape[1]), why);
            else
                expect_float_eq(back.tensor[id][e], want, "after unfuse, %s[%lld]%s", PARAM_NAMES[id], (long long)e,
                                why);
        }
    }
    layer_params_free(&back);
    drop(&pr);
}

// What the layout is for: the fused step (one input GEMM, one output GEMM) computes the separate
// step's outputs, and its gradients, unfused, are the separate step's gradients.
static void test_fused_step_equals_separate_step(void **state) {
    (void)state;
    Problem pr;
    make(&pr);
    const LayerConfig *c = &pr.cfg;
    const int64_t n = layer_tokens(c) * c->hidden;
    LayerInputs in;
    layer_inputs_alloc(c, &in);
    layer_inputs_init_random(c, test_seed() + 8, &in);
    LayerResults want;
    layer_results_alloc(c, &want);
    ref_parallel_train_step(c, &pr.p, &in, 2, &want);
    FusedParallelParams g;
    fused_parallel_alloc(c, &g);
    float *out = xmalloc((size_t)n * sizeof(float)), *dx = xmalloc((size_t)n * sizeof(float));
    ref_parallel_fused_train_step(c, &pr.f, &in, 2, out, dx, &g);
    expect_close("the fused step's output", out, want.out, layer_tokens(c), c->hidden, 1e-5, NULL);
    expect_close("the fused step's dx", dx, want.dx, layer_tokens(c), c->hidden, 1e-5, NULL);
    LayerParams grads;
    layer_params_alloc(c, &grads);
    parallel_grads_from_fused(c, &g, &grads);  // uses unfuse_parallel_params
    for (int id = 0; id < NUM_PARAMS; id++) {
        if (id == P_LN2_WEIGHT || id == P_LN2_BIAS) continue;  // unused by the parallel layer
        char what[64];
        snprintf(what, sizeof what, "gradient of %s", PARAM_NAMES[id]);
        int64_t shape[2];
        const int ndim = param_shape(c, id, shape);
        expect_close(what, grads.tensor[id], want.grad.tensor[id], shape[0], ndim == 2 ? shape[1] : 0, 1e-5, NULL);
    }
    layer_params_free(&grads);
    fused_parallel_free(&g);
    free(out), free(dx);
    layer_results_free(&want);
    layer_inputs_free(&in);
    drop(&pr);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_w_in_stacks_qkv_then_fc1),
        cmocka_unit_test(test_w_out_puts_proj_and_fc2_side_by_side),
        cmocka_unit_test(test_b_out_and_layernorm),
        cmocka_unit_test(test_unfuse_gives_the_weights_back),
        cmocka_unit_test(test_fused_step_equals_separate_step),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
