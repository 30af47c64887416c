// The parallel layer on the CPU: its gradients against finite differences, the fused weight
// layout computing the same function and gradients, and the converter's round trip.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/errors.h"
#include "common/core/tolerance.h"
#include "reference/parallel_reference.h"
#include "common/core/philox.h"
#include "reference/reference.h"
#include "tests/test_util.h"

static LayerConfig tiny(void) {
    LayerConfig c;
    layer_config_preset("tiny", &c);
    c.hidden = 32, c.ffn = 64, c.heads = 2, c.seq = 6, c.batch = 2;
    c.seed = test_seed();
    return c;
}

typedef struct {
    LayerConfig cfg;
    LayerParams p;
    LayerInputs in;
    float *out;
} Problem;

static void make(Problem *pr, int causal) {
    pr->cfg = tiny();
    pr->cfg.causal = causal;
    layer_params_alloc(&pr->cfg, &pr->p);
    layer_params_init_random(&pr->cfg, test_seed(), &pr->p);
    layer_inputs_alloc(&pr->cfg, &pr->in);
    layer_inputs_init_random(&pr->cfg, test_seed() + 1, &pr->in);
    for (int64_t i = 0; i < layer_tokens(&pr->cfg) * pr->cfg.hidden; i++) pr->in.dy[i] -= 0.5f;
    pr->out = xmalloc((size_t)(layer_tokens(&pr->cfg) * pr->cfg.hidden) * sizeof(float));
}

static void drop(Problem *pr) {
    layer_params_free(&pr->p);
    layer_inputs_free(&pr->in);
    free(pr->out);
}

static double loss(Problem *pr) {
    ref_parallel_forward(&pr->cfg, &pr->p, pr->in.x, 3, pr->out);
    double l = 0;
    for (int64_t i = 0; i < layer_tokens(&pr->cfg) * pr->cfg.hidden; i++) l += (double)pr->out[i] * pr->in.dy[i];
    return l;
}

// Central differences on a sample of entries of v (see tests/reference for the tolerance).
static void check_gradient(const char *what, Problem *pr, float *v, const float *grad, int64_t n) {
    double diff = 0, norm = 0;
    int samples = n < 24 ? (int)n : 24;
    for (int k = 0; k < samples; k++) {
        int64_t i = samples == n ? k : (int64_t)(philox4x32_10((uint64_t)k, 91, test_seed()).x[0] % (uint64_t)n);
        float saved = v[i];
        double h = 1e-2 * fmax(1.0, fabs(saved));
        v[i] = (float)(saved + h);
        double up = loss(pr);
        v[i] = (float)(saved - h);
        double down = loss(pr);
        v[i] = saved;
        double fd = (up - down) / (2 * h);
        diff += (fd - grad[i]) * (fd - grad[i]);
        norm += fd * fd;
    }
    double err = norm > 0 ? sqrt(diff / norm) : sqrt(diff);
    print_message("  d/d%-24s rel.err %.2e\n", what, err);
    if (!(err <= 1e-3)) fail_msg("gradient of %s: relative error %.3e", what, err);
}

static void gradients_case(int causal) {
    Problem pr;
    make(&pr, causal);
    LayerResults r;
    layer_results_alloc(&pr.cfg, &r);
    ref_parallel_train_step(&pr.cfg, &pr.p, &pr.in, 3, &r);
    check_gradient("x", &pr, pr.in.x, r.dx, layer_tokens(&pr.cfg) * pr.cfg.hidden);
    for (int i = 0; i < NUM_PARAMS; i++)
        check_gradient(PARAM_NAMES[i], &pr, pr.p.tensor[i], r.grad.tensor[i], param_numel(&pr.cfg, i));
    layer_results_free(&r);
    drop(&pr);
}

static void test_gradients(void **state) {
    (void)state;
    gradients_case(0);
    gradients_case(1);
}

// The fused form (one input GEMM split by views, one output GEMM summing the branches) is the
// same function with the same gradients.
static void test_fused_equals_unfused(void **state) {
    (void)state;
    Problem pr;
    make(&pr, 0);
    const LayerConfig *c = &pr.cfg;
    const int64_t n = layer_tokens(c) * c->hidden;
    LayerResults r;
    layer_results_alloc(c, &r);
    ref_parallel_train_step(c, &pr.p, &pr.in, 5, &r);
    FusedParallelParams f, g, want;
    fused_parallel_alloc(c, &f);
    fused_parallel_alloc(c, &g);
    fused_parallel_alloc(c, &want);
    fuse_parallel_params(c, &pr.p, &f);
    float *out = xmalloc((size_t)n * sizeof(float)), *dx = xmalloc((size_t)n * sizeof(float));
    ref_parallel_fused_train_step(c, &f, &pr.in, 5, out, dx, &g);
    assert_rel_error(out, r.out, n, 1e-6);
    assert_rel_error(dx, r.dx, n, 1e-6);
    // The unfused gradients in the fused layout: stacked and side by side as the weights,
    // and b_out's gradient is each output bias's gradient (they are equal), not their sum.
    fuse_parallel_params(c, &r.grad, &want);
    memcpy(want.b_out, r.grad.tensor[P_PROJ_BIAS], (size_t)c->hidden * sizeof(float));
    int64_t h = c->hidden, n_in = 3 * h + c->ffn, k_out = h + c->ffn;
    assert_rel_error(g.w_in, want.w_in, n_in * h, 1e-6);
    assert_rel_error(g.b_in, want.b_in, n_in, 1e-6);
    assert_rel_error(g.w_out, want.w_out, h * k_out, 1e-6);
    assert_rel_error(g.b_out, want.b_out, h, 1e-6);
    assert_rel_error(g.ln_weight, want.ln_weight, h, 1e-6);
    assert_rel_error(r.grad.tensor[P_FC2_BIAS], r.grad.tensor[P_PROJ_BIAS], h, 0.0);
    fused_parallel_free(&f), fused_parallel_free(&g), fused_parallel_free(&want);
    free(out), free(dx);
    layer_results_free(&r);
    drop(&pr);
}

// separate -> fused -> separate keeps every weight (b_out moves to b_proj, b_fc2 becomes
// zero) and the function; and the parallel layer is not the serial one.
static void test_converter_round_trip(void **state) {
    (void)state;
    Problem pr;
    make(&pr, 0);
    const LayerConfig *c = &pr.cfg;
    const int64_t n = layer_tokens(c) * c->hidden;
    FusedParallelParams f, f2;
    fused_parallel_alloc(c, &f);
    fused_parallel_alloc(c, &f2);
    fuse_parallel_params(c, &pr.p, &f);
    LayerParams back;
    layer_params_alloc(c, &back);
    unfuse_parallel_params(c, &f, &back);
    int same[] = {P_LN1_WEIGHT, P_LN1_BIAS, P_QKV_WEIGHT, P_QKV_BIAS, P_PROJ_WEIGHT, P_FC1_WEIGHT, P_FC1_BIAS,
                  P_FC2_WEIGHT};
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++)
        assert_memory_equal(back.tensor[same[i]], pr.p.tensor[same[i]], (size_t)param_numel(c, same[i]) * sizeof(float));
    fuse_parallel_params(c, &back, &f2);
    assert_memory_equal(f2.w_out, f.w_out, (size_t)(c->hidden * (c->hidden + c->ffn)) * sizeof(float));
    float *o1 = xmalloc((size_t)n * 4), *o2 = xmalloc((size_t)n * 4), *serial = xmalloc((size_t)n * 4);
    ref_parallel_forward(c, &pr.p, pr.in.x, 0, o1);
    ref_parallel_forward(c, &back, pr.in.x, 0, o2);
    assert_rel_error(o2, o1, n, 1e-6);
    ref_layer_forward(c, &pr.p, pr.in.x, 0, serial);
    assert_true(rel_error(serial, o1, n) > 1e-2);  // a different model
    fused_parallel_free(&f), fused_parallel_free(&f2);
    layer_params_free(&back);
    free(o1), free(o2), free(serial);
    drop(&pr);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_fused_equals_unfused),
        cmocka_unit_test(test_converter_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
