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
#include <math.h>
#include <stdlib.h>

#include "common/core/errors.h"
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
    layer_problem_init_random(&c, &p, &in);
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

// ---- Step 05's --fp8-attention ------------------------------------------------------------
// The GPU's attention forward under --fp8-attention rounds Q, K and V to E4M3 (scale 1 at the
// first step, as every FP8 tensor: nothing has been seen yet) and P * 256 to E4M3 before P V
// (kernels/attention/attention_fp8.h); its backward is the 16-bit one on the unrounded Q, K,
// V, recomputing P = exp(S - lse) with S from the unrounded Q and K but lse from the FP8
// forward. --check's reference has none of this. Emulated here through the reference's
// attention hook (RefQuantizer.attention_forward): the FP8 forward's ctx, and as the
// probabilities the backward uses, exp(S - lse8). How far that layer lies from the plain FP8
// reference, on --check's configuration for the flag (small preset, 2 heads: head_dim 128; no
// dropout), is what a correct GPU adds to its error: FP8_ATTENTION_EXTRA_TOLERANCE must sit
// 25% above it, at fp16 and bf16. An emulation: P is rounded relative to the row's final
// maximum (the kernel: its running maximum, the difference rescaled in float) and the
// backward's rowsum(dO * O) uses the recomputed probabilities, not the FP8 forward's O.

static float to_e4m3(float x) { return fp8_decode(fp8_encode(x, FP8_E4M3), FP8_E4M3); }

static void fp8_attention_emulated(const RefQuantizer *q, const LayerConfig *c, const float *qkv, float *ctx,
                                   float *probs) {
    (void)q;
    const int seq = c->seq, batch = c->batch, heads = c->heads, d = layer_head_dim(c);
    const int64_t n = layer_tokens(c) * 3 * c->hidden;
    const double scale = 1.0 / sqrt((double)d), p_scale = 256.0;  // 2^ATTENTION_FP8_P_LOG2_SCALE
    float *qkv8 = xmalloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) qkv8[i] = to_e4m3(qkv[i]);
    double *s8 = xmalloc((size_t)seq * sizeof(double)), *s16 = xmalloc((size_t)seq * sizeof(double));
    for (int b = 0; b < batch; b++)
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < seq; i++) {
                const int64_t qi = (((int64_t)i * batch + b) * heads + h) * 3 * d;
                double max = -INFINITY, sum = 0.0;
                for (int j = 0; j < seq; j++) {
                    const int64_t kj = (((int64_t)j * batch + b) * heads + h) * 3 * d + d;
                    double dot8 = 0.0, dot = 0.0;
                    for (int t = 0; t < d; t++)
                        dot8 += (double)qkv8[qi + t] * qkv8[kj + t], dot += (double)qkv[qi + t] * qkv[kj + t];
                    s8[j] = dot8 * scale, s16[j] = dot * scale;
                    if (s8[j] > max) max = s8[j];
                }
                for (int j = 0; j < seq; j++) sum += exp(s8[j] - max);
                const double lse = max + log(sum);
                float *out = ctx + (((int64_t)i * batch + b) * heads + h) * d;
                for (int t = 0; t < d; t++) {
                    double acc = 0.0;
                    for (int j = 0; j < seq; j++) {
                        const int64_t vj = (((int64_t)j * batch + b) * heads + h) * 3 * d + 2 * d;
                        acc += (double)to_e4m3((float)(exp(s8[j] - max) * p_scale)) * qkv8[vj + t];
                    }
                    out[t] = (float)(acc / (sum * p_scale));
                }
                float *pr = probs + (((int64_t)b * heads + h) * seq + i) * seq;
                for (int j = 0; j < seq; j++) pr[j] = (float)exp(s16[j] - lse);  // the 16-bit backward's P
            }
    free(qkv8), free(s8), free(s16);
}

static void measure_fp8_attention(DType dtype) {
    static const DelayedScaling recipe = {FP8_RECIPE_HYBRID, 0, 16, AMAX_ALGO_MAX};
    LayerConfig c;
    layer_config_preset("small", &c);
    c.heads = 2, c.attn_dropout = c.hidden_dropout = 0.0f, c.dtype = dtype;  // --check's for the flag
    LayerParams p;
    LayerInputs in;
    layer_problem_init_random(&c, &p, &in);
    LayerResults plain, emulated;
    layer_results_alloc(&c, &plain), layer_results_alloc(&c, &emulated);
    RefQuantizer q = fp8_first_step_quantizer(&recipe), q_attn = q;
    q_attn.attention_forward = fp8_attention_emulated;
    ref_layer_train_step_quantized(&c, &p, &in, 0, &q, &plain);
    ref_layer_train_step_quantized(&c, &p, &in, 0, &q_attn, &emulated);
    print_message(" --fp8-attention, %s, emulated against the FP8 reference:\n", dtype_name(dtype));
    double gap;
    compare_results(&c, &emulated, &plain, 1.0, stdout, &gap);
    print_message(" --fp8-attention %s: moves the results by %.3f; extra tolerance %.3f (total %.3f)\n",
                  dtype_name(dtype), gap, FP8_ATTENTION_EXTRA_TOLERANCE,
                  fp8_check_tolerance(dtype) + FP8_ATTENTION_EXTRA_TOLERANCE);
    assert_true(gap > 0.0);  // the emulation does round
    assert_true(1.25 * gap <= FP8_ATTENTION_EXTRA_TOLERANCE);
    layer_results_free(&plain), layer_results_free(&emulated);
    layer_params_free(&p);
    layer_inputs_free(&in);
}

static void test_fp8_attention(void **state) {
    (void)state;
    measure_fp8_attention(DTYPE_FP16);
    measure_fp8_attention(DTYPE_BF16);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_serial_layer),
        cmocka_unit_test(test_parallel_layer),
        cmocka_unit_test(test_fp8_attention),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
