// The whole of step 01 - one training step, forward and backward - against the CPU
// reference layer (ref_layer_train_step), at small sizes, fp16 and bf16, dropout on, causal
// and not. Checks out, dx and all 12 parameter gradients with the tolerance --check uses
// (check_tolerance: 4e-3 fp16, 2e-2 bf16, norm-wise relative error).
#include "common/core/tolerance.h"
#include "common/gpu/gpu.h"
#include "reference/reference.h"
#include "steps/01_naive/step01.h"
#include "tests/test_util.h"

static void run_case(const char *preset, DType dt, int causal) {
    LayerConfig cfg;
    assert_true(layer_config_preset(preset, &cfg));
    cfg.dtype = dt;
    cfg.causal = causal;
    cfg.seed = test_seed();
    cfg.attn_dropout = cfg.hidden_dropout = 0.1f;
    print_message("  %s %s%s\n", preset, dtype_name(dt), causal ? " causal" : "");

    LayerParams params;
    LayerInputs in;
    layer_problem_init_random(&cfg, &params, &in);

    // Step index 2: dropout masks other than step 0's (what --check uses).
    const uint64_t step = 2;
    LayerResults gpu, ref;
    layer_results_alloc(&cfg, &gpu);
    layer_results_alloc(&cfg, &ref);
    const int64_t n = layer_tokens(&cfg) * cfg.hidden;
    void *d_x = dev_upload(in.x, n, dt), *d_dy = dev_upload(in.dy, n, dt);
    void *s = STEP_01_NAIVE.create(&cfg, &params);
    STEP_01_NAIVE.train_step(s, d_x, d_dy, step);
    STEP_01_NAIVE.read_results(s, &gpu);
    STEP_01_NAIVE.destroy(s);
    dev_free(d_x);
    dev_free(d_dy);
    ref_layer_train_step(&cfg, &params, &in, step, &ref);

    double max_err;
    int ok = compare_results(&cfg, &gpu, &ref, check_tolerance(dt), stdout, &max_err);
    print_message("  max rel.err %.3e (tol %.1e)\n", max_err, check_tolerance(dt));
    assert_true(ok);

    layer_results_free(&gpu);
    layer_results_free(&ref);
    layer_params_free(&params);
    layer_inputs_free(&in);
}

static void test_step01_fp16(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    run_case("small", DTYPE_FP16, 0);
    run_case("tiny", DTYPE_FP16, 1);
}

static void test_step01_bf16(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    run_case("small", DTYPE_BF16, 0);
    run_case("tiny", DTYPE_BF16, 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_step01_fp16),
        cmocka_unit_test(test_step01_bf16),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
