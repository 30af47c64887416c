// Step 05 with --fp8-attention on the GPU (Hopper with sm_90a code; skipped elsewhere):
//   - `step05_fp8 --check --preset small --heads 2 --fp8-attention --dropout 0` passes at fp16
//     and at bf16 (the check as the binary runs it: step_check with the step's tolerance,
//     fp8_check_tolerance + 5e-2 with the flag; steps/05_fp8/README.md says why);
//   - the flag changes what runs: one training step's output differs from the step without it
//     (the FP8 forward's ctx is not the 16-bit one), so the pass above is not the 16-bit path's;
//   - with an error planted in the results (dx scaled by 1 + 3 x the tolerance) the check fails:
//     the grown tolerance still catches an error of that size.
#include <math.h>
#include <stdlib.h>

#include "common/core/gpu_arch.h"
#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu.h"
#include "kernels/attention/attention_fp8.h"
#include "steps/05_fp8/step05.h"
#include "steps/driver/step.h"
#include "tests/test_util.h"

#define SKIP_WITHOUT_FP8_ATTENTION()                                                              \
    do {                                                                                          \
        SKIP_WITHOUT_GPU();                                                                       \
        SKIP_BELOW_CC(GPU_ARCH_HOPPER, "the FP8 attention forward (wgmma)");                      \
        if (!attention_fp8_available()) {                                                         \
            print_message("[ SKIP     ] %s: this build has no sm_90a code (%s)\n", __func__,       \
                          gpu_code_description());                                                \
            skip();                                                                               \
        }                                                                                         \
    } while (0)

// --check's configuration for the flag: the small preset with 2 heads (head_dim 128), no dropout.
static LayerConfig check_config(DType dtype) {
    LayerConfig c;
    assert_true(layer_config_preset("small", &c));
    c.heads = 2, c.attn_dropout = c.hidden_dropout = 0.0f, c.dtype = dtype;
    return c;
}

typedef struct {
    LayerParams params;
    LayerInputs inputs;
} Problem;

static Problem make_problem(const LayerConfig *c) {
    Problem p;
    layer_params_alloc(c, &p.params);
    layer_params_init_random(c, c->seed, &p.params);
    layer_params_round(c, &p.params);
    layer_inputs_alloc(c, &p.inputs);
    layer_inputs_init_random(c, c->seed + 1, &p.inputs);
    layer_inputs_round(c, &p.inputs);
    return p;
}

static void free_problem(Problem *p) {
    layer_params_free(&p->params);
    layer_inputs_free(&p->inputs);
}

// One training step of `ops` (step index 0): its out.
static float *one_step_out(const StepOps *ops, const LayerConfig *c, const Problem *p) {
    const int64_t n = layer_tokens(c) * c->hidden;
    void *d_x = dev_upload(p->inputs.x, n, c->dtype), *d_dy = dev_upload(p->inputs.dy, n, c->dtype);
    void *state = ops->create(c, &p->params);
    ops->train_step(state, d_x, d_dy, 0);
    CUDA_CHECK(cudaDeviceSynchronize());
    LayerResults r;
    layer_results_alloc(c, &r);
    ops->read_results(state, &r);
    ops->destroy(state);
    dev_free(d_x), dev_free(d_dy);
    float *out = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) out[i] = r.out[i];
    layer_results_free(&r);
    return out;
}

static double rel_difference(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), den += (double)b[i] * b[i];
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

// The flag is a process-wide setting of step 05 that can only be turned on, so one case runs
// the step without it first, then with it.
static void test_check_with_fp8_attention(void **state) {
    (void)state;
    SKIP_WITHOUT_FP8_ATTENTION();
    const DType dtypes[2] = {DTYPE_FP16, DTYPE_BF16};
    float *out_16bit_attention[2];
    for (int d = 0; d < 2; d++) {
        const LayerConfig c = check_config(dtypes[d]);
        Problem p = make_problem(&c);
        out_16bit_attention[d] = one_step_out(&STEP_05_FP8, &c, &p);
        free_problem(&p);
    }
    assert_int_equal(STEP_05_FP8.parse_flag("--fp8-attention", NULL), 1);
    for (int d = 0; d < 2; d++) {
        const LayerConfig c = check_config(dtypes[d]);
        assert_null(STEP_05_FP8.unsupported(&c));
        assert_null(step_gpu_refusal(&STEP_05_FP8));
        Problem p = make_problem(&c);
        float *out = one_step_out(&STEP_05_FP8, &c, &p);
        const double moved = rel_difference(out, out_16bit_attention[d], layer_tokens(&c) * c.hidden);
        print_message("%s: out with --fp8-attention vs without: relative difference %.3e\n", dtype_name(c.dtype),
                      moved);
        assert_true(moved > 0.0);  // the FP8 forward ran
        StepReport r = {0};
        step_check(&STEP_05_FP8, &c, &p.params, &p.inputs, stdout, &r);
        print_message("%s: --check --fp8-attention: max relative error %.3e (tolerance %.3e)\n", dtype_name(c.dtype),
                      r.max_rel_error, STEP_05_FP8.tolerance(&c, -1));
        assert_int_equal(r.check_passed, 1);
        free(out), free(out_16bit_attention[d]);
        free_problem(&p);
    }
}

// A planted error: dx scaled by 1 + 3 x the tolerance. --check must fail it.
static double plant_scale;
static void planted_read_results(void *state, LayerResults *r) {
    STEP_05_FP8.read_results(state, r);
    const LayerConfig c = check_config(DTYPE_FP16);
    for (int64_t i = 0; i < layer_tokens(&c) * c.hidden; i++) r->dx[i] *= (float)plant_scale;
}

static void test_planted_error_fails(void **state) {
    (void)state;
    SKIP_WITHOUT_FP8_ATTENTION();
    assert_int_equal(STEP_05_FP8.parse_flag("--fp8-attention", NULL), 1);
    const LayerConfig c = check_config(DTYPE_FP16);
    plant_scale = 1.0 + 3.0 * STEP_05_FP8.tolerance(&c, -1);
    StepOps planted = STEP_05_FP8;
    planted.read_results = planted_read_results;
    Problem p = make_problem(&c);
    StepReport r = {0};
    step_check(&planted, &c, &p.params, &p.inputs, stdout, &r);
    print_message("planted dx x %.3f: max relative error %.3e, check %s\n", plant_scale, r.max_rel_error,
                  r.check_passed == 1 ? "passed (wrong)" : "failed (right)");
    assert_int_equal(r.check_passed, 0);
    free_problem(&p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_with_fp8_attention),
        cmocka_unit_test(test_planted_error_fails),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
