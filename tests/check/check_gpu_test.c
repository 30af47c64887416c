// --check's tolerance rule on the GPU: every 16-bit step passes the hard input of
// tests/check/check_inputs.h (rounding errors that add up coherently), which a fixed
// tolerance would fail, and a step with an error planted in its results still fails.
#include <string.h>

#include "common/core/tolerance.h"
#include "steps/compare/registry.h"
#include "steps/driver/step.h"
#include "tests/check/check_inputs.h"
#include "tests/test_util.h"

static int is_16bit_step(const StepOps *s) { return s->tolerance == NULL; }  // the FP8 steps set theirs

static void check_all_steps(DType dtype, int coherent) {
    SKIP_WITHOUT_GPU();
    LayerConfig c = check_test_config(dtype);
    LayerParams p;
    LayerInputs in;
    layer_params_alloc(&c, &p);
    layer_inputs_alloc(&c, &in);
    if (coherent) make_coherent_rounding_input(&c, test_seed(), &p, &in);
    else make_random_input(&c, test_seed(), &p, &in);
    for (int s = 0; s < NUM_STEPS; s++) {
        const StepOps *step = ALL_STEPS[s];
        if (!is_16bit_step(step)) continue;
        print_message("step %s, %s, %s input:\n", step->id, dtype_name(dtype), coherent ? "coherent-rounding" : "random");
        StepReport r = {0};
        step_check(step, &c, &p, &in, stdout, &r);
        if (r.check_passed != 1) fail_msg("step %s fails --check on a valid input", step->id);
    }
    layer_params_free(&p);
    layer_inputs_free(&in);
}

static void test_coherent_fp16(void **state) { (void)state, check_all_steps(DTYPE_FP16, 1); }
static void test_coherent_bf16(void **state) { (void)state, check_all_steps(DTYPE_BF16, 1); }

// A planted error: step 04 whose read_results returns out scaled by 1 + 4 x the floor (a
// wrong normalizer in the last epilogue, say). --check must fail it, on both inputs.
static void (*real_read_results)(void *, LayerResults *);
static double plant_scale;

static void planted_read_results(void *state, LayerResults *r) {
    real_read_results(state, r);
    LayerConfig c = check_test_config(DTYPE_FP16);
    for (int64_t i = 0; i < layer_tokens(&c) * c.hidden; i++) r->out[i] *= (float)plant_scale;
}

static void planted(DType dtype, int coherent) {
    SKIP_WITHOUT_GPU();
    LayerConfig c = check_test_config(dtype);
    LayerParams p;
    LayerInputs in;
    layer_params_alloc(&c, &p);
    layer_inputs_alloc(&c, &in);
    if (coherent) make_coherent_rounding_input(&c, test_seed(), &p, &in);
    else make_random_input(&c, test_seed(), &p, &in);
    StepOps step = *ALL_STEPS[3];
    assert_string_equal(step.id, "04_transformer_layer");
    real_read_results = step.read_results;
    step.read_results = planted_read_results;
    plant_scale = 1.0 + 4.0 * check_tolerance(dtype);
    StepReport r = {0};
    step_check(&step, &c, &p, &in, stdout, &r);
    assert_int_equal(r.check_passed, 0);
    layer_params_free(&p);
    layer_inputs_free(&in);
}

static void test_planted_random(void **state) { (void)state, planted(DTYPE_FP16, 0), planted(DTYPE_BF16, 0); }
static void test_planted_coherent(void **state) { (void)state, planted(DTYPE_FP16, 1), planted(DTYPE_BF16, 1); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_coherent_fp16),
        cmocka_unit_test(test_coherent_bf16),
        cmocka_unit_test(test_planted_random),
        cmocka_unit_test(test_planted_coherent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
