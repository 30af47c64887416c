// Does it still train with FP8? A short run on the CPU reference path: a student layer learns
// to reproduce a fixed random teacher layer (loss = mean squared error) by plain SGD, once
// with exact Linears and once with every Linear operand rounded to FP8 under delayed scaling
// (HYBRID, history 16, max), as step 05 does on the GPU. The FP8 loss curve must follow the
// exact one: both fall by more than half, and FP8's final loss is within 25% of the exact one.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/errors.h"
#include "common/fp8/fp8_format.h"
#include "common/fp8/fp8_recipe.h"
#include "reference/reference.h"
#include "tests/test_util.h"

enum { STEPS = 300, TENSORS_PER_STEP = 20 };

// Delayed scaling on the CPU: the quantizer is called in the same order every step (4
// forward Linears x {input, weight}, then 4 backward Linears x {input, weight, gradient}),
// so the call's index within the step names the tensor and its scaling state.
typedef struct {
    DelayedScaling recipe;
    Fp8Meta meta[TENSORS_PER_STEP];
    int call;
} Fp8Sim;

static void quantize_delayed(const RefQuantizer *q, float *x, int64_t n, int is_gradient) {
    Fp8Sim *sim = (Fp8Sim *)q->ctx;
    if (sim->call >= TENSORS_PER_STEP) DIE("more quantized tensors per step than expected");
    Fp8Meta *m = &sim->meta[sim->call++];
    (void)is_gradient;  // the meta's format already says E4M3 or E5M2
    float amax = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        amax = fmaxf(amax, fabsf(x[i]));
        x[i] = fp8_decode(fp8_encode(x[i] * m->scale, m->format), m->format) * m->scale_inv;
    }
    fp8_meta_record_amax(m, amax);
}

static void sgd(const LayerConfig *c, LayerParams *p, const LayerParams *g, float lr) {
    for (int i = 0; i < NUM_PARAMS; i++)
        for (int64_t k = 0; k < param_numel(c, i); k++) p->tensor[i][k] -= lr * g->tensor[i][k];
}

// Trains and returns the loss every 25 steps in curve[]; fp8 selects the rounded Linears.
static void train(const LayerConfig *c, const LayerParams *teacher, int fp8, double *curve) {
    LayerParams student;
    layer_params_alloc(c, &student);
    layer_params_init_random(c, 777, &student);
    LayerInputs in;
    layer_inputs_alloc(c, &in);
    LayerResults r;
    layer_results_alloc(c, &r);
    int64_t n = layer_tokens(c) * c->hidden;
    float *target = xmalloc((size_t)n * sizeof(float));
    Fp8Sim sim = {.recipe = delayed_scaling_default()};
    // Which of the 20 calls are gradients: the third of each backward Linear's three.
    for (int t = 0; t < TENSORS_PER_STEP; t++) fp8_meta_init(&sim.meta[t], &sim.recipe, t >= 8 && (t - 8) % 3 == 2);
    RefQuantizer q = {.quantize = quantize_delayed, .ctx = &sim};
    for (int step = 0; step < STEPS; step++) {
        fill_uniform(in.x, n, -1.0f, 1.0f, 99, (uint64_t)step);  // a fresh batch each step
        ref_layer_forward(c, teacher, in.x, 0, target);
        // dL/dout of L = mean((out - target)^2), computed from this step's output: run the
        // forward once to get out, then the training step with dy.
        ref_layer_forward(c, &student, in.x, 0, r.out);
        double loss = 0;
        for (int64_t i = 0; i < n; i++) {
            double e = r.out[i] - target[i];
            loss += e * e;
            in.dy[i] = (float)(2.0 * e / n);
        }
        loss /= n;
        if (fp8) {
            sim.call = 0;
            ref_layer_train_step_quantized(c, &student, &in, 0, &q, &r);
            for (int t = 0; t < TENSORS_PER_STEP; t++) fp8_update_scale(&sim.meta[t], &sim.recipe);
        } else {
            ref_layer_train_step(c, &student, &in, 0, &r);
        }
        sgd(c, &student, &r.grad, 0.5f);
        if (step % 25 == 0 || step == STEPS - 1) curve[step == STEPS - 1 ? STEPS / 25 : step / 25] = loss;
    }
    for (int t = 0; t < TENSORS_PER_STEP; t++) fp8_meta_free(&sim.meta[t]);
    free(target);
    layer_results_free(&r);
    layer_inputs_free(&in);
    layer_params_free(&student);
}

static void test_fp8_tracks_exact_training(void **state) {
    (void)state;
    LayerConfig c;
    layer_config_preset("tiny", &c);
    c.hidden = 32, c.ffn = 64, c.heads = 2, c.seq = 8, c.batch = 4;
    c.attn_dropout = c.hidden_dropout = 0.0f;
    LayerParams teacher;
    layer_params_alloc(&c, &teacher);
    layer_params_init_random(&c, 4242, &teacher);
    double exact[STEPS / 25 + 1], fp8[STEPS / 25 + 1];
    train(&c, &teacher, 0, exact);
    train(&c, &teacher, 1, fp8);
    print_message("  step   loss (exact)   loss (FP8)\n");
    for (int k = 0; k <= STEPS / 25; k++)
        print_message("  %4d   %.6f       %.6f\n", k == STEPS / 25 ? STEPS - 1 : k * 25, exact[k], fp8[k]);
    double e0 = exact[0], e1 = exact[STEPS / 25], f0 = fp8[0], f1 = fp8[STEPS / 25];
    assert_true(e1 < 0.5 * e0);
    assert_true(f1 < 0.5 * f0);
    assert_true(fabs(f1 - e1) <= 0.25 * e1);
    layer_params_free(&teacher);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_fp8_tracks_exact_training)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
