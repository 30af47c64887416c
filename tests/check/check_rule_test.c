// --check's tolerance rule (common/core/tolerance.h: max(floor, 2 x noise)), on the CPU.
//
// A "GPU" is emulated by the CPU reference with every stored tensor computed to about 20
// bits (a relative perturbation of up to 2^-20, as float accumulation in another order would
// leave it) and then rounded to the dtype - what a correct 16-bit GPU step does, with
// rounding errors of its own rather than the noise run's. Then:
//   - on the random input --check uses, the emulated GPU passes;
//   - on a valid input whose rounding errors add up coherently (tests/check/check_inputs.h),
//     the old fixed tolerance fails the correct emulated GPU, and the rule passes it;
//   - errors planted in the emulated GPU, of the size real kernel bugs make (a wrong scale, a
//     dropped term), fail the rule on both inputs.
#include <math.h>
#include <string.h>

#include "common/core/philox.h"
#include "common/core/tolerance.h"
#include "reference/reference.h"
#include "tests/check/check_inputs.h"
#include "tests/test_util.h"

// ---- the emulated GPU ---------------------------------------------------------------------
typedef enum { PLANT_NONE, PLANT_CTX_SCALE, PLANT_FC1_NO_BIAS, PLANT_K_WRONG_HEAD, NUM_PLANTS } Plant;
static const char *const PLANT_NAMES[NUM_PLANTS] = {
    "none", "ctx scaled by 1 + 4 x the floor (a wrong softmax normalizer)", "FC1's bias dropped",
    "head 0 attends with head 1's keys (a wrong index)"};

typedef struct {
    DType dtype;
    Plant plant;
    const LayerParams *params;
    int hidden, ffn, heads;
    uint64_t seed;
} Emulation;

static uint64_t name_hash(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void emulated_store(const RefQuantizer *q, const char *name, float *x, int64_t n) {
    const Emulation *e = q->ctx;
    // The plants, each where a kernel bug of its kind would show.
    if (e->plant == PLANT_CTX_SCALE && !strcmp(name, "ctx"))  // 1.6% at fp16, 8% at bf16
        for (int64_t i = 0; i < n; i++) x[i] *= (float)(1.0 + 4.0 * check_tolerance(e->dtype));
    if (e->plant == PLANT_FC1_NO_BIAS && !strcmp(name, "fc1"))
        for (int64_t i = 0; i < n; i++) x[i] -= e->params->tensor[P_FC1_BIAS][i % e->ffn];
    if (e->plant == PLANT_K_WRONG_HEAD && !strcmp(name, "qkv")) {
        const int d = e->hidden / e->heads;  // per token: heads x [q | k | v], d each
        for (int64_t t = 0; t < n / (3 * e->hidden); t++) {
            float *row = x + t * 3 * e->hidden;
            for (int j = 0; j < d; j++) row[d + j] = row[3 * d + d + j];  // k of head 0 := k of head 1
        }
    }
    // Computed to ~20 bits, then stored in the dtype.
    const uint64_t stream = name_hash(name);
    for (int64_t i = 0; i < n; i += 4) {
        Philox4 r = philox4x32_10((uint64_t)i >> 2, stream, e->seed);
        for (int j = 0; j < 4 && i + j < n; j++)
            x[i + j] *= 1.0f + ldexpf(2.0f * philox_to_unit_float(r.x[j]) - 1.0f, -20);
    }
    round_to_dtype(x, n, e->dtype);
}

static void run_emulated_gpu(const LayerConfig *c, const LayerParams *p, const LayerInputs *in, Plant plant,
                             LayerResults *out) {
    Emulation e = {c->dtype, plant, p, c->hidden, c->ffn, c->heads, test_seed() + 77};
    RefQuantizer q = {.store = emulated_store, .ctx = &e};
    ref_layer_train_step_quantized(c, p, in, 0, &q, out);
}

// ---- the two checks -------------------------------------------------------------------------
typedef struct {
    int fixed_passes, rule_passes;
    double max_noise;  // the largest noise over the 14 tensors
} Verdict;

static Verdict check(const LayerConfig *c, const LayerParams *p, const LayerInputs *in, Plant plant) {
    LayerResults gpu, ref, noisy;
    layer_results_alloc(c, &gpu);
    layer_results_alloc(c, &ref);
    layer_results_alloc(c, &noisy);
    run_emulated_gpu(c, p, in, plant, &gpu);
    ref_layer_train_step(c, p, in, 0, &ref);
    const RefQuantizer rounding = ref_rounding_to_dtype(&c->dtype);
    ref_layer_train_step_quantized(c, p, in, 0, &rounding, &noisy);
    Verdict v;
    double unused;
    v.fixed_passes = compare_results(c, &gpu, &ref, check_tolerance(c->dtype), NULL, &unused);
    print_message("  %s, planted error: %s\n", dtype_name(c->dtype), PLANT_NAMES[plant]);
    v.rule_passes = compare_results_with_noise(c, &gpu, &ref, &noisy, check_tolerance(c->dtype), stdout, &unused);
    v.max_noise = fmax(rel_error(noisy.out, ref.out, layer_tokens(c) * c->hidden),
                       rel_error(noisy.dx, ref.dx, layer_tokens(c) * c->hidden));
    for (int i = 0; i < NUM_PARAMS; i++)
        v.max_noise = fmax(v.max_noise, rel_error(noisy.grad.tensor[i], ref.grad.tensor[i], param_numel(c, i)));
    print_message("  -> fixed tolerance %s, rule %s (largest noise %.2e)\n", v.fixed_passes ? "passes" : "fails",
                  v.rule_passes ? "passes" : "fails", v.max_noise);
    layer_results_free(&gpu);
    layer_results_free(&ref);
    layer_results_free(&noisy);
    return v;
}

// --check's own input: the rule is the fixed tolerance there (2 x noise stays below the
// floor), the correct emulated GPU passes, and every plant fails.
static void test_random_input(DType dtype) {
    LayerConfig c = check_test_config(dtype);
    c.attn_dropout = c.hidden_dropout = 0.1f;  // --check's own configuration
    LayerParams p;
    LayerInputs in;
    layer_params_alloc(&c, &p);
    layer_inputs_alloc(&c, &in);
    make_random_input(&c, test_seed(), &p, &in);
    Verdict v = check(&c, &p, &in, PLANT_NONE);
    assert_true(v.fixed_passes);
    assert_true(v.rule_passes);
    assert_true(CHECK_NOISE_FACTOR * v.max_noise < check_tolerance(dtype));
    for (Plant plant = PLANT_CTX_SCALE; plant < NUM_PLANTS; plant++) {
        v = check(&c, &p, &in, plant);
        assert_false(v.rule_passes);
    }
    layer_params_free(&p);
    layer_inputs_free(&in);
}

// The hard input: a fixed tolerance fails the correct emulated GPU, the rule passes it, and
// the plants still fail - through out and dx, which stay well-conditioned, while the weight
// gradients are mostly rounding here (their tolerance grows to 2 x noise, ~0.1). Two plants
// cannot show on this input whatever the rule: every key is alike, so head 0 attending with
// head 1's keys changes almost nothing even in exact arithmetic; and at bf16 FC1's bias moves
// out by about bf16's floor (2%), which a random input shows through the gradients instead.
static void test_coherent_rounding_input(DType dtype) {
    LayerConfig c = check_test_config(dtype);
    LayerParams p;
    LayerInputs in;
    layer_params_alloc(&c, &p);
    layer_inputs_alloc(&c, &in);
    make_coherent_rounding_input(&c, test_seed(), &p, &in);
    Verdict v = check(&c, &p, &in, PLANT_NONE);
    assert_false(v.fixed_passes);  // the input is hard: a correct GPU fails a fixed tolerance
    assert_true(v.rule_passes);
    assert_false(check(&c, &p, &in, PLANT_CTX_SCALE).rule_passes);
    if (dtype == DTYPE_FP16) assert_false(check(&c, &p, &in, PLANT_FC1_NO_BIAS).rule_passes);
    layer_params_free(&p);
    layer_inputs_free(&in);
}

static void test_random_fp16(void **state) { (void)state, test_random_input(DTYPE_FP16); }
static void test_random_bf16(void **state) { (void)state, test_random_input(DTYPE_BF16); }
static void test_coherent_fp16(void **state) { (void)state, test_coherent_rounding_input(DTYPE_FP16); }
static void test_coherent_bf16(void **state) { (void)state, test_coherent_rounding_input(DTYPE_BF16); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_fp16),
        cmocka_unit_test(test_random_bf16),
        cmocka_unit_test(test_coherent_fp16),
        cmocka_unit_test(test_coherent_bf16),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
