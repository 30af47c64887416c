// Graded: exercise "tp_backward" (exercises/tp_backward.c), chapter 07.
//
// The serial layer cut tp ways on the CPU (reference/tp_layer_reference.c, with your backward
// pass) must give the unsharded reference's dx and gradients (ref_layer_train_step), in plain TP
// at tp 2, 3 and 6 with 6 heads of 6 features, ffn 30, seq 5 (shapes that no power of two
// divides), and under sequence parallelism at tp 3 (seq 6). The tolerance, 1e-5, is
// tests/tp/tp_sim_test.c's: an all-reduce adds tp float partial sums where the reference adds
// in double, ~1e-7; a missing or extra all-reduce is off by 1e-2 or more. Each test case is one
// point; every message names the tensor, tp and what a wrong all-reduce would look like.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/layer.h"
#include "reference/reference.h"
#include "reference/tp_layer_reference.h"
#include "reference/tp_reference.h"
#include "tests/exercises/grading.h"
#include "tests/test_util.h"

static const double TOL = 1e-5;

typedef struct {
    LayerConfig cfg;
    LayerParams params;
    LayerInputs in;
    LayerResults want, got;
    LayerParams rank_grads[TP_MAX_RANKS];
    int tp;
    const char *variant;  // "" or ", sequence-parallel", for the messages
} Run;

static void run_variant(Run *r, int tp, float dropout, int causal, int sequence_parallel) {
    const TpVariant v = {.layer = TP_LAYER_SERIAL, .sequence_parallel = sequence_parallel};
    layer_config_preset("tiny", &r->cfg);
    r->cfg.hidden = 36, r->cfg.ffn = 30, r->cfg.heads = 6, r->cfg.batch = 2;
    r->cfg.seq = sequence_parallel ? 6 : 5;  // sequence parallelism: tp must divide seq
    r->cfg.attn_dropout = dropout, r->cfg.hidden_dropout = dropout, r->cfg.causal = causal;
    r->cfg.seed = test_seed();
    r->tp = tp;
    r->variant = sequence_parallel ? ", sequence-parallel" : "";
    layer_params_alloc(&r->cfg, &r->params);
    layer_params_init_random(&r->cfg, test_seed() + 11, &r->params);
    layer_inputs_alloc(&r->cfg, &r->in);
    layer_inputs_init_random(&r->cfg, test_seed() + 12, &r->in);
    for (int64_t i = 0; i < layer_tokens(&r->cfg) * r->cfg.hidden; i++) r->in.dy[i] -= 0.5f;
    layer_results_alloc(&r->cfg, &r->want);
    layer_results_alloc(&r->cfg, &r->got);
    ref_layer_train_step(&r->cfg, &r->params, &r->in, 4, &r->want);
    tp_sim_layer_train_step(&r->cfg, tp, &v, &r->params, &r->in, 4, &r->got, r->rank_grads);
}

static void run(Run *r, int tp, float dropout, int causal) { run_variant(r, tp, dropout, causal, 0); }

static void drop(Run *r) {
    for (int k = 0; k < r->tp; k++) layer_params_free(&r->rank_grads[k]);
    layer_params_free(&r->params);
    layer_inputs_free(&r->in);
    layer_results_free(&r->want);
    layer_results_free(&r->got);
}

// got / want along want: 1 when right, tp when a complete gradient was summed over the ranks.
static double ratio(const float *got, const float *want, int64_t n) {
    double gw = 0, ww = 0;
    for (int64_t i = 0; i < n; i++) gw += (double)got[i] * want[i], ww += (double)want[i] * want[i];
    return ww > 0 ? gw / ww : 0;
}

static void check_tensor(const Run *r, const char *what, const float *got, const float *want, int64_t rows,
                         int64_t cols) {
    const int64_t n = cols > 0 ? rows * cols : rows;
    const double err = relative_error(got, want, n), k = ratio(got, want, n);
    char hint[256] = "";
    if (err > TOL && k > r->tp - 0.05 && k < r->tp + 0.05)
        snprintf(hint, sizeof hint, "it is %d (= tp) times too large: summed over the ranks although every rank "
                 "already had all of it", r->tp);
    else if (err > TOL)
        snprintf(hint, sizeof hint, "got/want along want: %.2f. Did a rank use its partial sum where the ranks' "
                 "total was needed, or sum something that was not partial?", k);
    char name[96];
    snprintf(name, sizeof name, "%s at tp %d%s", what, r->tp, r->variant);
    expect_close(name, got, want, rows, cols, TOL, hint);
}

static void check_param(const Run *r, int id) {
    int64_t shape[2];
    const int ndim = param_shape(&r->cfg, id, shape);
    char what[64];
    snprintf(what, sizeof what, "gradient of %s (%s)", PARAM_NAMES[id], tp_split_name(tp_param_split(id)));
    check_tensor(r, what, r->got.grad.tensor[id], r->want.grad.tensor[id], shape[0], ndim == 2 ? shape[1] : 0);
}

// The gradient at the layer's input: it goes through both LayerNorms' backward passes.
static void test_dx_tp2(void **state) {
    (void)state;
    Run r;
    run(&r, 2, 0.0f, 0);
    check_tensor(&r, "dx", r.got.dx, r.want.dx, layer_tokens(&r.cfg), r.cfg.hidden);
    drop(&r);
}

// The sharded parameters (each rank's gradient is its own slice of the whole).
static void test_sharded_gradients_tp2(void **state) {
    (void)state;
    Run r;
    run(&r, 2, 0.0f, 0);
    const int ids[] = {P_QKV_WEIGHT, P_QKV_BIAS, P_PROJ_WEIGHT, P_FC1_WEIGHT, P_FC1_BIAS, P_FC2_WEIGHT};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) check_param(&r, ids[i]);
    drop(&r);
}

// The replicated parameters: right, and the same on every rank.
static void test_replicated_gradients_tp3(void **state) {
    (void)state;
    Run r;
    run(&r, 3, 0.0f, 0);
    const int ids[] = {P_LN1_WEIGHT, P_LN1_BIAS, P_LN2_WEIGHT, P_LN2_BIAS, P_PROJ_BIAS, P_FC2_BIAS};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        check_param(&r, ids[i]);
        for (int k = 1; k < r.tp; k++)
            expect_true(!memcmp(r.rank_grads[k].tensor[ids[i]], r.rank_grads[0].tensor[ids[i]],
                                (size_t)param_numel(&r.cfg, ids[i]) * sizeof(float)),
                        "the gradient of %s (replicated) differs between rank 0 and rank %d at tp %d: every rank "
                        "must end with the same replicated gradient",
                        PARAM_NAMES[ids[i]], k, r.tp);
    }
    drop(&r);
}

// Everything at once, with dropout and the causal mask (the masks must not change with tp).
static void test_whole_step_tp3_dropout_causal(void **state) {
    (void)state;
    Run r;
    run(&r, 3, 0.1f, 1);
    check_tensor(&r, "out", r.got.out, r.want.out, layer_tokens(&r.cfg), r.cfg.hidden);
    check_tensor(&r, "dx", r.got.dx, r.want.dx, layer_tokens(&r.cfg), r.cfg.hidden);
    for (int id = 0; id < NUM_PARAMS; id++) check_param(&r, id);
    drop(&r);
}

// One head per rank.
static void test_whole_step_tp6(void **state) {
    (void)state;
    Run r;
    run(&r, 6, 0.1f, 0);
    check_tensor(&r, "dx", r.got.dx, r.want.dx, layer_tokens(&r.cfg), r.cfg.hidden);
    for (int id = 0; id < NUM_PARAMS; id++) check_param(&r, id);
    drop(&r);
}

// Sequence parallelism: each rank holds T/tp tokens of the LayerNorms, dropout and residuals.
// TP_REDUCE_TOKENS reduce-scatters there, so a backward pass that reduces the right buffers with
// it is right here too. (The replicated parameters' gradients are then partial sums over each
// rank's tokens: tp_layer_reference.c all-reduces them after your function returns.)
static void test_sequence_parallel_tp3(void **state) {
    (void)state;
    Run r;
    run_variant(&r, 3, 0.1f, 0, 1);
    check_tensor(&r, "dx", r.got.dx, r.want.dx, layer_tokens(&r.cfg), r.cfg.hidden);
    for (int id = 0; id < NUM_PARAMS; id++) check_param(&r, id);
    drop(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dx_tp2),
        cmocka_unit_test(test_sharded_gradients_tp2),
        cmocka_unit_test(test_replicated_gradients_tp3),
        cmocka_unit_test(test_whole_step_tp3_dropout_causal),
        cmocka_unit_test(test_whole_step_tp6),
        cmocka_unit_test(test_sequence_parallel_tp3),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
