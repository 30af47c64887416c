// Where the FP8 steps' --check tolerance comes from (steps/driver/fp8_step.h), on the CPU.
//
// The GPU computes every activation and gradient in 16 bits, the reference in float, and
// both then round them to FP8. FP8's steps are coarse (E5M2: 25% apart), so a value that a
// 16-bit rounding moves across an FP8 rounding boundary lands a whole FP8 step away. How far
// that carries through the layer is measured here: the FP8 reference against itself with
// every Linear operand perturbed by up to one 16-bit rounding (half the dtype's spacing)
// before its FP8 rounding - what a correct GPU step may differ by. The tolerance must sit
// above that noise floor with a 25% margin, for step 05's serial layer and step 06's
// parallel one, at fp16 and bf16. The test also prints how far the unrounded layer is from
// the FP8 one, to show what the whole-layer check can and cannot tell apart (the casts and
// the FP8 GEMMs themselves are checked tightly in fp8_gpu_test).
#include <stdlib.h>

#include "common/core/tolerance.h"
#include "common/fp8/fp8_format.h"
#include "steps/driver/fp8_step.h"
#include "reference/parallel_reference.h"
#include "common/core/philox.h"
#include "tests/test_util.h"

typedef struct {
    const DelayedScaling *recipe;
    double spacing;    // relative spacing of the 16-bit dtype (2^-10 fp16, 2^-7 bf16)
    uint64_t key;      // which draw of perturbations
    uint64_t counter;  // Philox counter: a fresh perturbation for every element
} Perturbation;

enum { DRAWS = 6 };  // the floor is the worst of several draws: one draw varies by ~15%

static void quantize_perturbed(const RefQuantizer *q, float *x, int64_t n, int is_gradient) {
    Perturbation *p = (Perturbation *)q->ctx;
    Fp8Format f = is_gradient && p->recipe->format == FP8_RECIPE_HYBRID ? FP8_E5M2 : FP8_E4M3;
    for (int64_t i = 0; i < n; i++) {
        Philox4 r = philox4x32_10(p->counter++, 0, p->key);
        double u = (philox_to_unit_float(r.x[0]) - 0.5) * p->spacing;  // within half a spacing
        x[i] = fp8_decode(fp8_encode((float)(x[i] * (1.0 + u)), f), f);
    }
}

typedef void (*TrainStepQ)(const LayerConfig *, const LayerParams *, const LayerInputs *, uint64_t,
                           const RefQuantizer *, LayerResults *);

// The largest relative error over out, dx and every gradient: what step_check compares.
static double worst_error(const LayerConfig *c, const LayerResults *a, const LayerResults *b) {
    double worst;
    compare_results(c, a, b, 1.0, NULL, &worst);
    return worst;
}

static void measure(const char *layer, TrainStepQ step, DType dtype) {
    static const DelayedScaling recipe = {FP8_RECIPE_HYBRID, 0, 16, AMAX_ALGO_MAX};
    LayerConfig c;
    layer_config_preset("small", &c);  // the --check configuration
    c.dtype = dtype;
    LayerParams p;
    LayerInputs in;
    layer_params_alloc(&c, &p);
    layer_params_init_random(&c, c.seed, &p);
    layer_params_round(&c, &p);
    layer_inputs_alloc(&c, &in);
    layer_inputs_init_random(&c, c.seed + 1, &in);
    layer_inputs_round(&c, &in);
    LayerResults fp8, perturbed, exact;
    layer_results_alloc(&c, &fp8), layer_results_alloc(&c, &perturbed), layer_results_alloc(&c, &exact);
    RefQuantizer q = fp8_first_step_quantizer(&recipe);
    step(&c, &p, &in, 0, &q, &fp8);
    step(&c, &p, &in, 0, NULL, &exact);
    double noise = 0.0;
    for (uint64_t key = 1; key <= DRAWS; key++) {
        Perturbation pert = {&recipe, dtype == DTYPE_BF16 ? 1.0 / 128 : 1.0 / 1024, key, 0};
        RefQuantizer qp = {.quantize = quantize_perturbed, .ctx = &pert};
        step(&c, &p, &in, 0, &qp, &perturbed);
        const double e = worst_error(&c, &perturbed, &fp8);
        if (e > noise) noise = e;
    }
    const double gap = worst_error(&c, &exact, &fp8);
    const double tol = fp8_check_tolerance(dtype);
    print_message(" %-8s %s: noise floor %.3f, tolerance %.3f, unrounded layer vs FP8 %.3f\n", layer,
                  dtype_name(dtype), noise, tol, gap);
    assert_true(noise > 0.0);  // the perturbation does move FP8 roundings
    assert_true(1.25 * noise <= tol);
    layer_results_free(&fp8), layer_results_free(&perturbed), layer_results_free(&exact);
    layer_params_free(&p);
    layer_inputs_free(&in);
}

static void test_serial_layer(void **state) {
    (void)state;
    measure("serial", ref_layer_train_step_quantized, DTYPE_FP16);
    measure("serial", ref_layer_train_step_quantized, DTYPE_BF16);
}

static void test_parallel_layer(void **state) {
    (void)state;
    measure("parallel", ref_parallel_train_step_quantized, DTYPE_FP16);
    measure("parallel", ref_parallel_train_step_quantized, DTYPE_BF16);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_serial_layer),
        cmocka_unit_test(test_parallel_layer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
