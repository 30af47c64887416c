// Does FP8 still train - on the GPU?
//
// A student layer learns to imitate a fixed random teacher layer: every step a fresh random
// batch x, target = teacher(x), loss = mean((student(x) - target)^2), and plain SGD on float
// master weights (as an optimizer keeps them; the GPU modules get 16-bit copies after every
// update). The same student, data and learning rate twice: as step 04's TransformerLayer in
// 16 bits, and as step 05's layer with its Linears in FP8 under delayed scaling (HYBRID,
// history 16, max) - TE's quickstart comparison, te.TransformerLayer without and with
// fp8_autocast. It prints both loss curves, and passes (exit 0) if both losses fall by more
// than half and FP8's final loss is within 25% of the 16-bit one. The same experiment on the
// CPU reference path is tests/fp8/fp8_training_test.c.
//
//   step05_train_demo [--steps N] [--lr X] [--dtype fp16|bf16]
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/errors.h"
#include "common/core/flags.h"
#include "common/gpu/gpu.h"
#include "common/core/layer.h"
#include "steps/driver/step.h"
#include "steps/04_transformer_layer/step04.h"
#include "steps/05_fp8/step05.h"

enum { REPORT_EVERY = 25 };

typedef struct {
    LayerConfig cfg;
    int steps;
    float lr;
} Demo;

static const char *const DEMO_FLAGS[] = {"--steps", "--lr", "--dtype"};

static FlagKind demo_flag_kind(const char *name, void *ctx) {
    (void)ctx;
    return flag_is_one_of(name, DEMO_FLAGS, 3) ? FLAG_VALUE : FLAG_UNKNOWN;
}

// A layer small enough to train in seconds, with the shapes the kernels need (head dim 64,
// FP8 dims multiples of 16), and no dropout: the loss then depends on the weights only.
static Demo parse_args(int argc, char **argv) {
    Demo d = {.steps = 300, .lr = 2.0f};
    layer_config_preset("tiny", &d.cfg);
    d.cfg.hidden = 128, d.cfg.ffn = 256, d.cfg.heads = 2, d.cfg.seq = 64, d.cfg.batch = 4;
    d.cfg.attn_dropout = d.cfg.hidden_dropout = 0.0f;
    FlagArg *flags = xcalloc((size_t)argc, sizeof(FlagArg));
    const int n = flags_split(argc, argv, demo_flag_kind, NULL, flags);
    if (n < 0) {
        printf("usage: step05_train_demo [--steps N] [--lr X] [--dtype fp16|bf16]\n"
               "  --steps N            SGD steps, 1..100000 (default 300)\n"
               "  --lr X               learning rate, above 0 and below 100 (default 2)\n"
               "  --dtype fp16|bf16    the 16-bit type of both layers (default fp16)\n"
               "Every flag takes --flag VALUE or --flag=VALUE.\n");
        exit(0);
    }
    static const char *const DTYPES[] = {"fp16", "bf16"};
    for (int i = 0; i < n; i++) {
        const char *f = flags[i].name, *v = flags[i].value;
        if (!strcmp(f, "--steps")) d.steps = (int)parse_int_flag(f, v, 1, 100000);
        else if (!strcmp(f, "--lr")) d.lr = (float)parse_float_flag(f, v, 0.0, 100.0, RANGE_OPEN);
        else d.cfg.dtype = parse_choice_flag(f, v, DTYPES, 2) ? DTYPE_BF16 : DTYPE_FP16;
    }
    free(flags);
    return d;
}

static void copy_params(const LayerConfig *c, const LayerParams *from, LayerParams *to) {
    for (int i = 0; i < NUM_PARAMS; i++) memcpy(to->tensor[i], from->tensor[i], (size_t)param_numel(c, i) * sizeof(float));
}

// Trains the student as `layer` (step 04 or 05); curve[k] is the loss at step k * REPORT_EVERY
// (the last entry: the final step).
static void train(const Demo *d, const StepOps *layer, const StepOps *teacher_ops, void *teacher,
                  const LayerParams *student_init, double *curve) {
    const LayerConfig *c = &d->cfg;
    const int64_t n = layer_tokens(c) * c->hidden;
    LayerParams master, rounded;  // float master weights; their 16-bit copy for the GPU
    layer_params_alloc(c, &master);
    layer_params_alloc(c, &rounded);
    copy_params(c, student_init, &master);
    copy_params(c, student_init, &rounded);
    layer_params_round(c, &rounded);
    void *state = layer->create(c, &rounded);
    LayerResults r;
    layer_results_alloc(c, &r);
    float *x = xmalloc((size_t)n * sizeof(float)), *target = xmalloc((size_t)n * sizeof(float));
    float *out = xmalloc((size_t)n * sizeof(float)), *dy = xmalloc((size_t)n * sizeof(float));
    void *d_x = dev_alloc((size_t)n * dtype_bytes(c->dtype)), *d_dy = dev_alloc((size_t)n * dtype_bytes(c->dtype));
    for (int step = 0; step < d->steps; step++) {
        fill_uniform(x, n, -1.0f, 1.0f, 99, (uint64_t)step);  // a fresh batch, the same for both runs
        dev_upload_to(d_x, x, n, c->dtype);
        teacher_ops->forward(teacher, d_x, 0);
        dev_download(target, teacher_ops->output(teacher), n, c->dtype);
        // The loss's gradient needs this step's output: forward, then choose dy, then backward.
        layer->forward(state, d_x, 0);
        dev_download(out, layer->output(state), n, c->dtype);
        double loss = 0.0;
        for (int64_t i = 0; i < n; i++) {
            double e = (double)out[i] - target[i];
            loss += e * e;
            dy[i] = (float)(2.0 * e / (double)n);
        }
        loss /= (double)n;
        dev_upload_to(d_dy, dy, n, c->dtype);
        layer->backward(state, d_dy, 0);
        layer->read_results(state, &r);
        for (int i = 0; i < NUM_PARAMS; i++)  // SGD on the float masters
            for (int64_t k = 0; k < param_numel(c, i); k++) master.tensor[i][k] -= d->lr * r.grad.tensor[i][k];
        copy_params(c, &master, &rounded);
        layer_params_round(c, &rounded);
        layer->load_params(state, &rounded);
        if (step % REPORT_EVERY == 0) curve[step / REPORT_EVERY] = loss;
        if (step == d->steps - 1) curve[(d->steps - 1) / REPORT_EVERY + 1] = loss;
    }
    layer->destroy(state);
    dev_free(d_x), dev_free(d_dy);
    free(x), free(target), free(out), free(dy);
    layer_results_free(&r);
    layer_params_free(&master), layer_params_free(&rounded);
}

int main(int argc, char **argv) {
    Demo d = parse_args(argc, argv);
    const StepOps *fp16 = &STEP_04_TRANSFORMER_LAYER, *fp8 = &STEP_05_FP8;
    const char *why = fp8->unsupported(&d.cfg);
    if (why) fail_user("%s", why);
    require_valid_environment();
    gpu_require();  // a machine without a GPU is told so in a sentence, before the GPU is asked anything
    why = step_gpu_refusal(fp8);  // before the teacher is even built
    if (why) fail_user("%s", why);
    printf("GPU: %s\n", gpu_description());
    printf("student learns a random teacher: hidden %d, ffn %d, heads %d, seq %d, batch %d, %s, no dropout; "
           "SGD lr %g, %d steps\n", d.cfg.hidden, d.cfg.ffn, d.cfg.heads, d.cfg.seq, d.cfg.batch,
           dtype_name(d.cfg.dtype), d.lr, d.steps);
    LayerParams teacher_params, student;
    layer_params_alloc(&d.cfg, &teacher_params);
    layer_params_init_random(&d.cfg, 4242, &teacher_params);
    layer_params_round(&d.cfg, &teacher_params);
    layer_params_alloc(&d.cfg, &student);
    layer_params_init_random(&d.cfg, 777, &student);
    void *teacher = fp16->create(&d.cfg, &teacher_params);

    const int points = (d.steps - 1) / REPORT_EVERY + 2;
    double *loss16 = xcalloc((size_t)points, sizeof(double)), *loss8 = xcalloc((size_t)points, sizeof(double));
    train(&d, fp16, fp16, teacher, &student, loss16);
    train(&d, fp8, fp16, teacher, &student, loss8);

    printf("%6s %14s %14s\n", "step", "loss (16-bit)", "loss (FP8)");
    for (int k = 0; k < points; k++) {
        int step = k == points - 1 ? d.steps - 1 : k * REPORT_EVERY;
        if (k == points - 2 && step == d.steps - 1) continue;  // the last step is printed below
        printf("%6d %14.6f %14.6f\n", step, loss16[k], loss8[k]);
    }
    const double first16 = loss16[0], last16 = loss16[points - 1], first8 = loss8[0], last8 = loss8[points - 1];
    const int learned = last16 < 0.5 * first16 && last8 < 0.5 * first8;
    const int tracks = fabs(last8 - last16) <= 0.25 * last16;
    printf("16-bit: %.4f -> %.4f; FP8: %.4f -> %.4f; FP8's final loss %+.1f%% from 16-bit's\n", first16, last16,
           first8, last8, 100.0 * (last8 - last16) / last16);
    printf("TRAINING DEMO %s (both losses at least halve: %s; FP8 within 25%% of 16-bit: %s)\n",
           learned && tracks ? "PASSED" : "FAILED", learned ? "yes" : "no", tracks ? "yes" : "no");
    fp16->destroy(teacher);
    layer_params_free(&teacher_params), layer_params_free(&student);
    free(loss16), free(loss8);
    return learned && tracks ? 0 : 1;
}
