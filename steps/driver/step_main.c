// The driver shared by every step: flags, inputs, the speedometer, --check, --save, JSON.
#include <cuda_profiler_api.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/errors.h"
#include "common/core/tolerance.h"
#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu.h"
#include "common/gpu/gpu_phase.h"
#include "reference/reference.h"
#include "steps/driver/breakdown_report.h"
#include "steps/driver/floors.h"
#include "steps/driver/step.h"
#include "common/io/weights_io.h"
#include "modules/gemm.h"

// ---- flags --------------------------------------------------------------------------------
void options_defaults(Options *o) {
    memset(o, 0, sizeof *o);
    o->layer = layer_config_quickstart();
    o->warmup = 3;
    o->iters = 10;
}

static void print_help(const char *prog, const StepOps *step) {
    printf("usage: %s [flags]\n", prog);
    if (step) printf("Step %s: %s\n  %s\n", step->id, step->title, step->whats_new);
    printf(
        "\nThe layer (defaults: the quickstart configuration)\n"
        "  --preset NAME        quickstart (h4096 ffn16384 heads32 s2048 b4), small (--check's), tiny\n"
        "  --hidden N --ffn N --heads N --seq N --batch N\n"
        "  --dtype fp16|bf16    storage type on the GPU (default fp16)\n"
        "  --dropout P          attention and hidden dropout (default 0.1)\n"
        "  --attn-dropout P --hidden-dropout P\n"
        "  --causal             causal attention mask\n"
        "  --seed N             dropout masks and random weights/inputs (default 1234)\n"
        "  --deterministic      bit-reproducible steps: attention's dQ and the GEMMs sum in a fixed order\n"
        "Running\n"
        "  --warmup N --iters N untimed and timed training steps (default 3 and 10)\n"
        "  --check              compare out, dx and every gradient with the CPU reference\n"
        "                       (uses the small preset unless a preset or size is given)\n"
        "  --weights FILE       load the 12 parameters from safetensors (PyTorch names)\n"
        "  --input FILE         load x and dy from safetensors (else random)\n"
        "  --save FILE          save out, dx and grad.<name> after one step (safetensors)\n"
        "  --breakdown          then one more step timed by category (GEMM fprop/dgrad/wgrad,\n"
        "                       attention, LayerNorm, ...), each beside its floor measured here\n"
        "  --json FILE          write the results as JSON\n"
        "  --help\n");
    if (step && step->flags_help) printf("Flags of this step\n%s", step->flags_help);
}

static long parse_int(const char *flag, const char *v, long lo, long hi) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > hi)
        fail_user("%s expects an integer in [%ld, %ld], got '%s'", flag, lo, hi, v);
    return x;
}

static float parse_prob(const char *flag, const char *v) {
    char *end;
    float x = strtof(v, &end);
    if (*end || end == v || !(x >= 0.0f && x < 1.0f))
        fail_user("%s expects a probability in [0, 1), got '%s'", flag, v);
    return x;
}

void options_parse(int argc, char **argv, Options *o, const StepOps *step) {
    LayerConfig *c = &o->layer;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        // Flags without a value.
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            print_help(argv[0], step);
            exit(0);
        }
        if (!strcmp(f, "--check")) { o->check = 1; continue; }
        if (!strcmp(f, "--causal")) { c->causal = 1; continue; }
        if (!strcmp(f, "--breakdown")) { o->breakdown = 1; continue; }
        if (!strcmp(f, "--deterministic")) { o->deterministic = 1; continue; }
        if (step && step->parse_flag && step->parse_flag(f, NULL)) continue;
        // Flags with a value.
        if (strncmp(f, "--", 2) != 0) fail_user("unexpected argument '%s' (see --help)", f);
        if (i + 1 >= argc) fail_user("%s needs a value (see --help)", f);
        const char *v = argv[++i];
        if (!strcmp(f, "--preset")) {
            uint64_t seed = c->seed;
            if (!layer_config_preset(v, c)) fail_user("unknown preset '%s' (quickstart, small, tiny)", v);
            c->seed = seed;
            o->check_config_given = 1;
        } else if (!strcmp(f, "--hidden")) { c->hidden = (int)parse_int(f, v, 1, 1 << 20); o->check_config_given = 1; }
        else if (!strcmp(f, "--ffn")) { c->ffn = (int)parse_int(f, v, 1, 1 << 22); o->check_config_given = 1; }
        else if (!strcmp(f, "--heads")) { c->heads = (int)parse_int(f, v, 1, 1 << 12); o->check_config_given = 1; }
        else if (!strcmp(f, "--seq")) { c->seq = (int)parse_int(f, v, 1, 1 << 20); o->check_config_given = 1; }
        else if (!strcmp(f, "--batch")) { c->batch = (int)parse_int(f, v, 1, 1 << 16); o->check_config_given = 1; }
        else if (!strcmp(f, "--dtype")) {
            if (!strcmp(v, "fp16")) c->dtype = DTYPE_FP16;
            else if (!strcmp(v, "bf16")) c->dtype = DTYPE_BF16;
            else fail_user("--dtype expects fp16 or bf16, got '%s'", v);
        } else if (!strcmp(f, "--dropout")) { c->attn_dropout = c->hidden_dropout = parse_prob(f, v); }
        else if (!strcmp(f, "--attn-dropout")) { c->attn_dropout = parse_prob(f, v); }
        else if (!strcmp(f, "--hidden-dropout")) { c->hidden_dropout = parse_prob(f, v); }
        else if (!strcmp(f, "--seed")) { c->seed = (uint64_t)parse_int(f, v, 0, 0x7fffffffffffffffL); }
        else if (!strcmp(f, "--warmup")) { o->warmup = (int)parse_int(f, v, 0, 1000000); }
        else if (!strcmp(f, "--iters")) { o->iters = (int)parse_int(f, v, 1, 1000000); }
        else if (!strcmp(f, "--weights")) { o->weights_path = v; }
        else if (!strcmp(f, "--input")) { o->input_path = v; }
        else if (!strcmp(f, "--save")) { o->save_path = v; }
        else if (!strcmp(f, "--json")) { o->json_path = v; }
        else if (step && step->parse_flag && step->parse_flag(f, v)) {}
        else fail_user("unknown flag '%s' (see --help)", f);
    }
    if (o->check && o->breakdown) fail_user("--breakdown times a step and --check checks one: give one of them");
    if (o->check && !o->check_config_given) {
        LayerConfig small;
        layer_config_preset("small", &small);
        small.dtype = c->dtype;
        small.attn_dropout = c->attn_dropout;
        small.hidden_dropout = c->hidden_dropout;
        small.causal = c->causal;
        small.seed = c->seed;
        *c = small;
    }
    c->deterministic = o->deterministic;  // after --preset and --check's configuration, which replace *c
    const char *problem = layer_config_problem(c);
    if (problem) fail_user("bad configuration: %s", problem);
}

// ---- running a step ----------------------------------------------------------------------
static void print_config(const LayerConfig *c) {
    printf("config: hidden %d, ffn %d, heads %d (head_dim %d), seq %d, batch %d, %s, "
           "dropout %.2g/%.2g%s%s\n",
           c->hidden, c->ffn, c->heads, layer_head_dim(c), c->seq, c->batch, dtype_name(c->dtype),
           c->attn_dropout, c->hidden_dropout, c->causal ? ", causal" : "", c->deterministic ? ", deterministic" : "");
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// The step's state on the GPU. --deterministic reaches the attention through cfg; the GEMMs'
// switch is the process's (their plans are), so it is set here, before the step plans any.
static void *create_step(const StepOps *step, const LayerConfig *cfg, const LayerParams *params) {
    gemm_set_deterministic(cfg->deterministic);
    return step->create(cfg, params);
}

StepReport step_time(const StepOps *step, const LayerConfig *cfg, const LayerParams *params,
                     const LayerInputs *inputs, int warmup, int iters, int breakdown) {
    StepReport r = {0};
    r.max_rel_error = -1;
    r.check_passed = -1;
    size_t baseline = dev_bytes_in_use();
    dev_reset_peak();
    int64_t n = layer_tokens(cfg) * cfg->hidden;
    void *d_x = dev_upload(inputs->x, n, cfg->dtype);
    void *d_dy = dev_upload(inputs->dy, n, cfg->dtype);
    void *state = create_step(step, cfg, params);

    uint64_t step_index = 0;
    for (int i = 0; i < warmup; i++) step->train_step(state, d_x, d_dy, step_index++);

    cudaEvent_t *events = xmalloc(sizeof(cudaEvent_t) * (size_t)(iters + 1));
    for (int i = 0; i <= iters; i++) CUDA_CHECK(cudaEventCreate(&events[i]));
    if (breakdown) gpu_phase_prepare();
    CUDA_CHECK(cudaEventRecord(events[0], 0));
    for (int i = 0; i < iters; i++) {
        // The last timed step is bracketed for profilers that start late, so that
        // `ncu --profile-from-start off <step>` measures one steady-state step's kernels
        // (not the GEMM autotuning or the warm-up). Without a profiler these do nothing.
        if (i == iters - 1) CUDA_CHECK(cudaProfilerStart());
        step->train_step(state, d_x, d_dy, step_index++);
        CUDA_CHECK(cudaEventRecord(events[i + 1], 0));
        if (i == iters - 1) CUDA_CHECK(cudaProfilerStop());
    }
    if (breakdown) {  // queued behind the last timed step, so the GPU does not wait for it
        gpu_phase_start_step();
        step->train_step(state, d_x, d_dy, step_index++);
        r.breakdown_ms = gpu_phase_finish_step(r.category_ms);
        r.has_breakdown = 1;
    }
    CUDA_CHECK(cudaEventSynchronize(events[iters]));
    CHECK_LAUNCH();
    double *ms = xmalloc(sizeof(double) * (size_t)iters);
    for (int i = 0; i < iters; i++) {
        float t;
        CUDA_CHECK(cudaEventElapsedTime(&t, events[i], events[i + 1]));
        ms[i] = t;
    }
    float total;
    CUDA_CHECK(cudaEventElapsedTime(&total, events[0], events[iters]));
    qsort(ms, (size_t)iters, sizeof(double), compare_doubles);
    r.mean_ms = total / iters;
    r.median_ms = iters % 2 ? ms[iters / 2] : 0.5 * (ms[iters / 2 - 1] + ms[iters / 2]);
    r.min_ms = ms[0];
    r.tflops = layer_train_flops(cfg) / (r.mean_ms * 1e-3) / 1e12;
    r.peak_mib = (double)(dev_peak_bytes() - baseline) / 1048576.0;
    for (int i = 0; i <= iters; i++) CUDA_CHECK(cudaEventDestroy(events[i]));
    free(events);
    free(ms);
    step->destroy(state);
    dev_free(d_x);
    dev_free(d_dy);
    return r;
}

// Runs one GPU training step (step index 0) and returns its results in `res`.
static void run_once(const StepOps *step, const LayerConfig *cfg, const LayerParams *params,
                     const LayerInputs *inputs, LayerResults *res) {
    int64_t n = layer_tokens(cfg) * cfg->hidden;
    void *d_x = dev_upload(inputs->x, n, cfg->dtype);
    void *d_dy = dev_upload(inputs->dy, n, cfg->dtype);
    void *state = create_step(step, cfg, params);
    step->train_step(state, d_x, d_dy, 0);
    CUDA_CHECK(cudaDeviceSynchronize());
    step->read_results(state, res);
    step->destroy(state);
    dev_free(d_x);
    dev_free(d_dy);
}

void step_check(const StepOps *step, const LayerConfig *cfg, const LayerParams *params,
                const LayerInputs *inputs, FILE *log, StepReport *report) {
    LayerResults gpu, ref;
    layer_results_alloc(cfg, &gpu);
    layer_results_alloc(cfg, &ref);
    run_once(step, cfg, params, inputs, &gpu);
    (step->reference ? step->reference : ref_layer_train_step)(cfg, params, inputs, 0, &ref);
    double tol = step->tolerance ? step->tolerance(cfg, -1) : check_tolerance(cfg->dtype);
    if (log) fprintf(log, "check against the CPU reference (||gpu - ref|| / ||ref||):\n");
    report->check_passed = compare_results(cfg, &gpu, &ref, tol, log, &report->max_rel_error);
    layer_results_free(&gpu);
    layer_results_free(&ref);
}

static void write_json(const char *path, const StepOps *step, const LayerConfig *c,
                       const StepReport *r, const MeasuredRates *rates) {
    FILE *f = fopen(path, "w");
    if (!f) fail_user("cannot write %s: %s", path, strerror(errno));
    fprintf(f,
            "{\"step\": \"%s\", \"title\": \"%s\", \"gpu\": \"%s\", \"hidden\": %d, \"ffn\": %d, "
            "\"heads\": %d, \"seq\": %d, \"batch\": %d, \"dtype\": \"%s\", \"mean_ms\": %.4f, "
            "\"median_ms\": %.4f, \"tflops\": %.2f, \"peak_mib\": %.1f, \"max_rel_error\": %.4g, "
            "\"check_passed\": %d",
            step->id, step->title, gpu_description(), c->hidden, c->ffn, c->heads, c->seq,
            c->batch, dtype_name(c->dtype), r->mean_ms, r->median_ms, r->tflops, r->peak_mib,
            r->max_rel_error, r->check_passed);
    if (r->has_breakdown) {
        fprintf(f, ", \"rates\": ");
        fprint_json(f, rates_json(rates));
        fprintf(f, ", \"breakdown\": ");
        fprint_json(f, step_breakdown_json(step, c, rates, r));
    }
    fprintf(f, "}\n");
    fclose(f);
}

const char *step_gpu_refusal(const StepOps *step) {
    if (!step->min_cc) return NULL;
    char what[160];
    snprintf(what, sizeof what, "step %s (%s)", step->id, step->title);
    return gpu_refusal(what, step->min_cc);
}

int step_main(int argc, char **argv, const StepOps *step) {
    Options o;
    options_defaults(&o);
    options_parse(argc, argv, &o, step);
    const LayerConfig *cfg = &o.layer;
    if (step->unsupported) {
        const char *why = step->unsupported(cfg);
        if (why) fail_user("step %s cannot run this configuration: %s", step->id, why);
    }
    LayerParams params;
    layer_params_alloc(cfg, &params);
    if (o.weights_path) load_layer_params(o.weights_path, cfg, &params);
    else layer_params_init_random(cfg, cfg->seed, &params);
    layer_params_round(cfg, &params);
    LayerInputs inputs;
    layer_inputs_alloc(cfg, &inputs);
    if (o.input_path) load_layer_inputs(o.input_path, cfg, &inputs);
    else layer_inputs_init_random(cfg, cfg->seed + 1, &inputs);
    layer_inputs_round(cfg, &inputs);

    // Files are read before looking for a GPU: a bad file is reported on any machine.
    gpu_require();
    const char *refusal = step_gpu_refusal(step);
    if (refusal) fail_user("%s", refusal);
    printf("step %s: %s\nGPU: %s\nGPU code: %s\n", step->id, step->title, gpu_description(),
           gpu_code_description());
    print_config(cfg);

    StepReport report = {0};
    MeasuredRates rates = {0};
    report.max_rel_error = -1;
    report.check_passed = -1;
    if (o.check) {
        step_check(step, cfg, &params, &inputs, stdout, &report);
        printf("%s: max relative error %.3e\n", report.check_passed ? "CHECK PASSED" : "CHECK FAILED",
               report.max_rel_error);
    } else {
        StepReport t = step_time(step, cfg, &params, &inputs, o.warmup, o.iters, o.breakdown);
        t.max_rel_error = report.max_rel_error;
        t.check_passed = report.check_passed;
        report = t;
        printf("Mean time: %.3f ms   (median %.3f ms over %d steps after %d warm-up; "
               "fwd+bwd)\n", report.mean_ms, report.median_ms, o.iters, o.warmup);
        printf("%.1f TFLOP/s, peak device memory %.0f MiB\n", report.tflops, report.peak_mib);
        if (o.breakdown) {
            rates = measure_rates(cfg, step->variant.fp8_gemms);
            CategoryWork work;
            double floor_ms[NUM_CATEGORIES];
            const double floor = step_floors(step, cfg, &rates, &work, floor_ms);
            print_step_breakdown(stdout, &report, &work, floor_ms);
            printf("\n");
            print_rates(stdout, cfg, &rates);
            printf("model FLOPs utilisation %.1f%% of the measured %s GEMM rate; mean step %.2fx its floor "
                   "(%.3f ms)\n", 100.0 * step_mfu(step, cfg, &rates, report.mean_ms),
                   step->variant.fp8_gemms ? "FP8" : dtype_name(cfg->dtype), time_over_floor(report.mean_ms, floor),
                   floor);
        }
    }
    if (o.save_path) {
        LayerResults res;
        layer_results_alloc(cfg, &res);
        run_once(step, cfg, &params, &inputs, &res);
        save_layer_results(o.save_path, cfg, &res);
        printf("saved out, dx and %d gradients to %s\n", NUM_PARAMS, o.save_path);
        layer_results_free(&res);
    }
    if (o.json_path) write_json(o.json_path, step, cfg, &report, &rates);
    layer_params_free(&params);
    layer_inputs_free(&inputs);
    return report.check_passed == 0 ? 1 : 0;
}
