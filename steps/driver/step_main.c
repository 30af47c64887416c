// The driver shared by every step: inputs, the speedometer, --check, --save, JSON (the flags
// are options.c's).
#include <cuda_profiler_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/core/errors.h"
#include "common/core/philox.h"
#include "common/core/tolerance.h"
#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu.h"
#include "common/io/output_file.h"
#include "common/io/weights_io.h"
#include "kernels/attention/attention.h"
#include "common/gpu/gpu_phase.h"
#include "reference/reference.h"
#include "steps/driver/breakdown_report.h"
#include "steps/driver/floors.h"
#include "steps/driver/step.h"
#include "modules/gemm.h"
#include "modules/linear.h"

// Steps recorded for the time breakdown (--breakdown), averaged: see step_time.
enum { BREAKDOWN_STEPS = 5 };

// ---- running a step ----------------------------------------------------------------------
// "0.1016 (26/256 for 0.1)": the probability dropout uses, and what was asked when it differs.
static const char *dropout_words(char buf[64], float p) {
    if (dropout_used(p) == p) snprintf(buf, 64, "%g", p);
    else snprintf(buf, 64, "%.4g (%u/256 for %g)", dropout_used(p), dropout_threshold(p), p);
    return buf;
}

static void print_config(const LayerConfig *c) {
    char attn[64], hid[64];
    printf("config: hidden %d, ffn %d, heads %d (head_dim %d), seq %d, batch %d, %s, "
           "dropout %s / %s%s%s\n",
           c->hidden, c->ffn, c->heads, layer_head_dim(c), c->seq, c->batch, dtype_name(c->dtype),
           dropout_words(attn, c->attn_dropout), dropout_words(hid, c->hidden_dropout), c->causal ? ", causal" : "",
           c->deterministic ? ", deterministic" : "");
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

    // Each timed step between its own two events, so that recorded steps can sit between
    // timed ones without being counted in the mean.
    cudaEvent_t *events = xmalloc(sizeof(cudaEvent_t) * (size_t)(2 * iters));
    for (int i = 0; i < 2 * iters; i++) CUDA_CHECK(cudaEventCreate(&events[i]));
    if (breakdown) gpu_phase_prepare();
    // The recorded steps (--breakdown) are spread among the timed ones, one after every
    // `every` timed steps: a step's time drifts by a few percent over seconds (GPU clocks), so
    // recorded and timed steps must sample the same stretch of time (H200, 2026-11-29: five
    // recorded steps after the 10 timed ones came out 95.9% to 101.7% of the timed mean).
    const int recorded_steps = breakdown ? (iters < BREAKDOWN_STEPS ? iters : BREAKDOWN_STEPS) : 0;
    const int every = recorded_steps ? iters / recorded_steps : 0;
    int recorded = 0;
    for (int i = 0; i < iters; i++) {
        // The last timed step is bracketed for profilers that start late, so that
        // `ncu --profile-from-start off <step>` measures one steady-state step's kernels
        // (not the GEMM autotuning or the warm-up). Without a profiler these do nothing.
        if (i == iters - 1) CUDA_CHECK(cudaProfilerStart());
        CUDA_CHECK(cudaEventRecord(events[2 * i], 0));
        step->train_step(state, d_x, d_dy, step_index++);
        CUDA_CHECK(cudaEventRecord(events[2 * i + 1], 0));
        if (i == iters - 1) CUDA_CHECK(cudaProfilerStop());
        if (recorded < recorded_steps && (i + 1) % every == 0) {  // a recorded step, not timed
            double category_ms[NUM_CATEGORIES] = {0};
            gpu_phase_start_step();
            step->train_step(state, d_x, d_dy, step_index++);
            r.breakdown_ms += gpu_phase_finish_step(category_ms) / recorded_steps;
            for (int c = 0; c < NUM_CATEGORIES; c++) r.category_ms[c] += category_ms[c] / recorded_steps;
            recorded++;
        }
    }
    if (breakdown) {
        r.has_breakdown = 1;
        r.breakdown_timer = gpu_phase_timer_key(gpu_phase_timer());
    }
    CUDA_CHECK(cudaEventSynchronize(events[2 * iters - 1]));
    CHECK_LAUNCH();
    double *ms = xmalloc(sizeof(double) * (size_t)iters);
    double total = 0;
    for (int i = 0; i < iters; i++) {
        float t;
        CUDA_CHECK(cudaEventElapsedTime(&t, events[2 * i], events[2 * i + 1]));
        ms[i] = t;
        total += t;
    }
    qsort(ms, (size_t)iters, sizeof(double), compare_doubles);
    r.mean_ms = total / iters;
    r.median_ms = iters % 2 ? ms[iters / 2] : 0.5 * (ms[iters / 2 - 1] + ms[iters / 2]);
    r.min_ms = ms[0];
    r.tflops = layer_train_flops(cfg) / (r.mean_ms * 1e-3) / 1e12;
    r.peak_mib = (double)(dev_peak_bytes() - baseline) / 1048576.0;
    for (int i = 0; i < 2 * iters; i++) CUDA_CHECK(cudaEventDestroy(events[i]));
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
    LayerResults gpu, ref, noisy;
    layer_results_alloc(cfg, &gpu);
    layer_results_alloc(cfg, &ref);
    run_once(step, cfg, params, inputs, &gpu);
    (step->reference ? step->reference : ref_layer_train_step)(cfg, params, inputs, 0, &ref);
    // The noise run: the same reference, every stored tensor rounded to the dtype (see
    // CHECK_NOISE_FACTOR in common/core/tolerance.h).
    const RefQuantizer rounding = ref_rounding_to_dtype(&cfg->dtype);
    int have_noise = 1;
    layer_results_alloc(cfg, &noisy);
    if (!step->reference) ref_layer_train_step_quantized(cfg, params, inputs, 0, &rounding, &noisy);
    else if (step->reference_rounded) step->reference_rounded(cfg, params, inputs, 0, &rounding, &noisy);
    else have_noise = 0;
    // The magnitude run, for the sums that cancel (CHECK_SUM_ROUNDINGS in tolerance.h).
    const RefQuantizer magnitude_run = ref_grad_magnitudes();
    LayerResults magnitudes;
    layer_results_alloc(cfg, &magnitudes);
    if (!step->reference) ref_layer_train_step_quantized(cfg, params, inputs, 0, &magnitude_run, &magnitudes);
    else if (step->reference_rounded) step->reference_rounded(cfg, params, inputs, 0, &magnitude_run, &magnitudes);
    const double floor = step->tolerance ? step->tolerance(cfg, -1) : check_tolerance(cfg->dtype);
    if (log) {
        fprintf(log, "check against the CPU reference (||gpu - ref|| / ||ref||)");
        if (have_noise)
            fprintf(log, "; tolerance max(%.1e, %g x noise), noise = the same error of the CPU reference run "
                    "with every stored tensor rounded to %s; a gradient whose sum cancels: ||gpu - ref|| <= %g u "
                    "||sum over tokens of |terms|||", floor, CHECK_NOISE_FACTOR, dtype_name(cfg->dtype), CHECK_SUM_ROUNDINGS);
        fprintf(log, ":\n");
    }
    report->check_passed =
        compare_results_with_noise(cfg, &gpu, &ref, have_noise ? &noisy : NULL, have_noise ? &magnitudes : NULL, floor, log, &report->max_rel_error);
    layer_results_free(&gpu);
    layer_results_free(&ref);
    layer_results_free(&noisy);
    layer_results_free(&magnitudes);
}

static void write_json(const char *path, const StepOps *step, const LayerConfig *c,
                       const StepReport *r, const MeasuredRates *rates) {
    FILE *f = output_open(path, "w");
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
    output_commit(f, path);
}

static double gib(double bytes) { return bytes / (1024.0 * 1024.0 * 1024.0); }

// Host memory: what the run needs at least, against what this machine has.
static void require_host_memory(const LayerConfig *c, int check) {
    const double need = layer_host_bytes(c, check);
    const double have = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGE_SIZE);
    if (have > 0 && need > have)
        fail_user("this configuration (hidden %d, ffn %d, heads %d, seq %d, batch %d%s) needs at least %.1f GiB "
                  "of host memory for its weights, inputs and results%s; this machine has %.1f GiB",
                  c->hidden, c->ffn, c->heads, c->seq, c->batch, check ? ", --check" : "", gib(need),
                  check ? " and the CPU reference's activations" : "", gib(have));
}

// Device memory, at least: the parameters and their gradients, the inputs, and the
// activations every step keeps for the backward (LN1's output, qkv, ctx, y, LN2's output, the
// FC1 output, out: 9 t h + t f values), all 16-bit. A lower bound: the refusal is never wrong.
static void require_device_memory(const LayerConfig *c) {
    double params = 0;
    for (int i = 0; i < NUM_PARAMS; i++) params += (double)param_numel(c, i);
    const double t = (double)layer_tokens(c);
    const double need = 2.0 * (2.0 * params + 2.0 * t * c->hidden + t * (9.0 * c->hidden + c->ffn));
    size_t free_bytes = 0, total_bytes = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    if (need > (double)free_bytes)
        fail_user("this configuration (hidden %d, ffn %d, heads %d, seq %d, batch %d) needs at least %.1f GiB of "
                  "device memory for its weights, gradients and activations; the GPU has %.1f GiB free (of %.1f)",
                  c->hidden, c->ffn, c->heads, c->seq, c->batch, gib(need), gib((double)free_bytes),
                  gib((double)total_bytes));
}

// Refuses what the driver's run cannot mean, and what the step cannot run, before any work.
static void require_runnable(const StepOps *step, const Options *o) {
    const LayerConfig *cfg = &o->layer;
    if (o->check && o->timing_given)
        fail_user("--check runs one step against the CPU reference and times nothing, so --warmup and --iters "
                  "would be ignored: drop them, or time without --check");
    const char *why = step->unsupported ? step->unsupported(cfg) : NULL;
    if (why)
        fail_user("step %s cannot run this configuration (hidden %d / heads %d = head_dim %d, ffn %d, seq %d, "
                  "batch %d): %s", step->id, cfg->hidden, cfg->heads, layer_head_dim(cfg), cfg->ffn, cfg->seq,
                  cfg->batch, why);
}

const char *step_gpu_refusal(const StepOps *step) {
    if (step->min_cc) {
        char what[160];
        snprintf(what, sizeof what, "step %s (%s)", step->id, step->title);
        const char *why = gpu_refusal(what, step->min_cc);
        if (why) return why;
    }
    return step->flag_gpu_refusal ? step->flag_gpu_refusal() : NULL;
}

void require_valid_environment(void) {
    attention_require_valid_switches();  // ATTENTION_*
    linear_require_valid_switches();     // EPILOGUE_*, GEMM_AUTOTUNE
    gpu_require_valid_switches();        // GPU_SIMULATE_CC's spelling
    (void)gpu_phase_timer();             // GPU_PHASE_TIMER
}

int step_main(int argc, char **argv, const StepOps *step) {
    Options o;
    options_defaults(&o);
    options_parse(argc, argv, &o, step);
    const LayerConfig *cfg = &o.layer;
    require_runnable(step, &o);
    require_host_memory(cfg, o.check);
    LayerParams params;
    layer_params_alloc(cfg, &params);
    if (o.weights_path) {
        input_check_readable("--weights", o.weights_path);
        load_layer_params(o.weights_path, cfg, &params);
    } else {
        layer_params_init_random(cfg, cfg->seed, &params);
    }
    layer_params_round(cfg, &params);
    LayerInputs inputs;
    layer_inputs_alloc(cfg, &inputs);
    if (o.input_path) {
        input_check_readable("--input", o.input_path);
        load_layer_inputs(o.input_path, cfg, &inputs);
    } else {
        layer_inputs_init_random(cfg, cfg->seed + 1, &inputs);
    }
    layer_inputs_round(cfg, &inputs);

    // Files and the switches are read before looking for a GPU: a bad file or switch value is
    // reported on any machine.
    require_valid_environment();
    gpu_require();
    const char *refusal = step_gpu_refusal(step);
    if (refusal) fail_user("%s", refusal);
    require_device_memory(cfg);
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
            rates = measure_rates(cfg, step->variant.fp8_gemms, 1);
            CategoryWork work;
            double floor_ms[NUM_CATEGORIES], limit_floor_ms[NUM_CATEGORIES];
            const double floor = step_floors(step, cfg, &rates, &work, floor_ms);
            const MeasuredRates at_limit = rates_at_power_limit(&rates);
            const double limit_floor = step_floors(step, cfg, &at_limit, &work, limit_floor_ms);
            print_step_breakdown(stdout, &report, &work, floor_ms, limit_floor_ms);
            printf("\n");
            print_rates(stdout, cfg, &rates);
            printf("model FLOPs utilisation %.1f%% of the measured %s GEMM rate; mean step %.2fx its floor "
                   "(%.3f ms), %.2fx its floor at the power limit (%.3f ms)\n",
                   100.0 * step_mfu(step, cfg, &rates, report.mean_ms),
                   step->variant.fp8_gemms ? "FP8" : dtype_name(cfg->dtype), time_over_floor(report.mean_ms, floor),
                   floor, time_over_floor(report.mean_ms, limit_floor), limit_floor);
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
