// The per-step comparison: every step at one configuration, side by side.
//
// For each step: --check at the small preset (max relative error against the CPU reference),
// then the timing at the chosen configuration (default: the quickstart). Prints a table and
// writes it as JSON (--json) and as an SVG bar chart (--svg). Without a GPU it says so and
// runs what can run - the CPU reference at the tiny preset - and writes that, marked as such,
// to the same files. Everything it is told is checked before any work: the steps named by
// --steps exist, the --pytorch file reads, the output files can be written; the flags that
// make no sense here (--check, --weights, --input, --save) are refused.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "common/core/errors.h"
#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu.h"
#include "common/io/output_file.h"
#include "reference/reference.h"
#include "steps/driver/step.h"
#include "steps/compare/registry.h"

// Timings of the same layer in PyTorch (tools/pytorch_compare.py writes them), shown beside
// our steps: {"PyTorch eager": {"mean_ms": 26.0, ...}, ...}.
typedef struct {
    char name[64];
    double mean_ms;
} Baseline;

enum { MAX_BASELINES = 8 };

// compare's own flags (StepOps.parse_flag has no context, so they live here).
static struct {
    const char *svg_path;
    int skip_check;
    int selected[16];  // by index into ALL_STEPS; all of them when --steps is not given
    int steps_given;
    Baseline torch[MAX_BASELINES];
    int ntorch;
} flags;

static void load_baselines(const char *path) {
    json_error_t err;
    json_t *root = json_load_file(path, 0, &err);
    if (!root && err.line > 0) fail_user("--pytorch %s: %s (line %d)", path, err.text, err.line);
    if (!root) fail_user("--pytorch %s: %s", path, err.text);
    if (!json_is_object(root)) fail_user("--pytorch %s: expected a JSON object {\"name\": {\"mean_ms\": ...}}", path);
    const char *key;
    json_t *value;
    flags.ntorch = 0;
    json_object_foreach(root, key, value) {
        json_t *ms = json_object_get(value, "mean_ms");
        if (!json_is_object(value) || !json_is_number(ms) || flags.ntorch == MAX_BASELINES) continue;
        snprintf(flags.torch[flags.ntorch].name, sizeof flags.torch[0].name, "%s", key);
        flags.torch[flags.ntorch].mean_ms = json_number_value(ms);
        flags.ntorch++;
    }
    json_decref(root);
    if (flags.ntorch == 0) fail_user("--pytorch %s: no entry with a \"mean_ms\" number", path);
}

// A step's short name: "01" for 01_naive, "06u" for 06u_parallel_unfused.
static void short_id(const StepOps *s, char out[8]) {
    size_t n = strcspn(s->id, "_");
    snprintf(out, 8, "%.*s", (int)(n < 7 ? n : 7), s->id);
}

// --steps 01,04,06u: each item names a step by its number (all of its variants: "06" is 06,
// 06u and 06f) or its short name ("06u"), or its full id.
static void select_steps(const char *list) {
    flags.steps_given = 1;
    char *copy = strdup(list);
    if (!copy) DIE("out of memory");
    for (char *save = NULL, *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        int found = 0;
        for (int s = 0; s < NUM_STEPS; s++) {
            char id[8];
            short_id(ALL_STEPS[s], id);
            if (!strcmp(item, id) || !strcmp(item, ALL_STEPS[s]->id) || (strlen(item) == 2 && !strncmp(item, id, 2)))
                flags.selected[s] = found = 1;
        }
        if (!found) {
            char known[256] = "";
            size_t used = 0;
            for (int s = 0; s < NUM_STEPS && used < sizeof known; s++) {
                char id[8];
                short_id(ALL_STEPS[s], id);
                used += (size_t)snprintf(known + used, sizeof known - used, "%s%s", s ? ", " : "", id);
            }
            fail_user("--steps %s: there is no step '%s' (the steps: %s)", list, item, known);
        }
    }
    free(copy);
}

static int parse_compare_flag(const char *flag, const char *value) {
    if (!value) {
        if (strcmp(flag, "--skip-check") != 0) return 0;
        flags.skip_check = 1;
        return 1;
    }
    if (!strcmp(flag, "--svg")) {
        output_check_writable(flag, value);
        flags.svg_path = value;
    } else if (!strcmp(flag, "--steps")) {
        select_steps(value);
    } else if (!strcmp(flag, "--pytorch")) {
        load_baselines(value);
    } else {
        return 0;
    }
    return 1;
}

static const StepOps COMPARE = {
    .parse_flag = parse_compare_flag,
    .flags_help =
        "  --steps LIST         the steps to run, e.g. 01,04 (06 is all three variants; 06u, 06f one)\n"
        "  --skip-check         time only; no check at the small preset\n"
        "  --json FILE          the table as JSON (also without a GPU: the CPU reference's time)\n"
        "  --svg FILE           the table as an SVG bar chart (also without a GPU)\n"
        "  --pytorch FILE       PyTorch's times (tools/pytorch_compare.py) as extra rows\n"
        "compare takes the layer flags above and --warmup, --iters; not --check (it checks every step\n"
        "at the small preset unless --skip-check), --weights, --input or --save (each step runs on\n"
        "random weights and inputs; for those, run the step's own binary).\n",
};

static int step_selected(int s) { return !flags.steps_given || flags.selected[s]; }

// One row of the table: a step, or the CPU reference when there is no GPU.
typedef struct {
    const char *id, *title, *whats_new;
    StepReport report;
} Row;

static json_t *number_or_null(double x, int have) { return have ? json_real(x) : json_null(); }

// The table as JSON (jansson; keys in this order). gemm_tflops <= 0: no GPU, no floor.
static void write_json(const char *path, const char *gpu, const LayerConfig *c, const Row *rows, int n,
                       double gemm_tflops) {
    const int have_gpu = gemm_tflops > 0;
    json_t *root = json_object(), *steps = json_array();
    json_object_set_new(root, "gpu", json_string(gpu));
    json_object_set_new(root, "config", json_pack("{s:i, s:i, s:i, s:i, s:i, s:s, s:f}", "hidden", c->hidden, "ffn",
                                                  c->ffn, "heads", c->heads, "seq", c->seq, "batch", c->batch,
                                                  "dtype", dtype_name(c->dtype), "dropout", (double)c->attn_dropout));
    json_object_set_new(root, "gemm_tflops", number_or_null(gemm_tflops, have_gpu));
    json_object_set_new(root, "floor_ms",
                        number_or_null(layer_train_flops(c) / (gemm_tflops * 1e12) * 1e3, have_gpu));
    for (int i = 0; i < n; i++) {
        const StepReport *r = &rows[i].report;
        json_array_append_new(steps, json_pack("{s:s, s:s, s:s, s:f, s:f, s:f, s:f, s:f, s:i}", "step", rows[i].id,
                                               "title", rows[i].title, "whats_new", rows[i].whats_new, "mean_ms",
                                               r->mean_ms, "median_ms", r->median_ms, "tflops", r->tflops, "peak_mib",
                                               r->peak_mib, "max_rel_error", r->max_rel_error, "check_passed",
                                               r->check_passed));
    }
    json_object_set_new(root, "steps", steps);
    FILE *f = output_open(path, "w");
    if (json_dumpf(root, f, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(7)) != 0) DIE("json_dumpf failed for %s", path);
    fputc('\n', f);
    output_commit(f, path);
    json_decref(root);
    printf("wrote %s\n", path);
}

static void write_svg(const char *path, const char *gpu, const LayerConfig *c, const Row *rows, int n,
                      double floor_ms, const Baseline *base, int nbase);

// Without a GPU: time the CPU reference at the tiny preset, so the command still shows
// something real on a laptop or in CI, and write that to the --json and --svg files asked for.
static int run_cpu_only(const Options *o) {
    printf("No usable CUDA GPU here (%s).\n", gpu_unavailable_reason());
    printf("Running what can run on the CPU: the reference layer at the tiny preset.\n\n");
    LayerConfig cfg;
    layer_config_preset("tiny", &cfg);
    cfg.dtype = o->layer.dtype;
    LayerParams params;
    LayerInputs inputs;
    LayerResults res;
    layer_params_alloc(&cfg, &params);
    layer_params_init_random(&cfg, cfg.seed, &params);
    layer_inputs_alloc(&cfg, &inputs);
    layer_inputs_init_random(&cfg, cfg.seed + 1, &inputs);
    layer_results_alloc(&cfg, &res);
    const int iters = 5;
    double *ms = xmalloc(iters * sizeof(double));
    for (int i = 0; i < iters; i++) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        ref_layer_train_step(&cfg, &params, &inputs, (uint64_t)i, &res);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        ms[i] = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) * 1e-6;
    }
    Row row = {.id = "reference", .title = "CPU reference", .whats_new = "plain C, double accumulation (no GPU here)"};
    StepReport *r = &row.report;
    for (int i = 0; i < iters; i++) r->mean_ms += ms[i] / iters;
    r->min_ms = ms[0];
    for (int i = 1; i < iters; i++) r->min_ms = fmin(r->min_ms, ms[i]);
    r->median_ms = ms[iters / 2];  // not sorted: close enough for 5 runs of the same work
    r->tflops = layer_train_flops(&cfg) / (r->mean_ms * 1e-3) / 1e12;
    r->max_rel_error = -1;
    r->check_passed = -1;
    free(ms);
    double out_norm = 0;
    for (int64_t i = 0; i < layer_tokens(&cfg) * cfg.hidden; i++) out_norm += (double)res.out[i] * res.out[i];
    printf("%-22s %-40s %10s %12s\n", "step", "what", "mean ms", "GFLOP/s");
    printf("%-22s %-40s %10.2f %12.2f\n", "reference (CPU)", "plain C, double accumulation", r->mean_ms,
           r->tflops * 1e3);
    printf("\n(hidden %d, ffn %d, heads %d, seq %d, batch %d; ||out|| = %.4f)\n", cfg.hidden, cfg.ffn,
           cfg.heads, cfg.seq, cfg.batch, sqrt(out_norm));
    printf("The GPU steps need an NVIDIA GPU (Hopper for every step): see README.md.\n");
    char gpu[320];
    snprintf(gpu, sizeof gpu, "none: %s", gpu_unavailable_reason());
    if (o->json_path) write_json(o->json_path, gpu, &cfg, &row, 1, 0.0);
    if (flags.svg_path) write_svg(flags.svg_path, gpu, &cfg, &row, 1, 0.0, flags.torch, 0);
    layer_params_free(&params);
    layer_inputs_free(&inputs);
    layer_results_free(&res);
    return 0;
}

// The rate of one large fp16 matrix product on this GPU: the ceiling for the "floor" line.
static double measure_gemm_tflops(void) {
    const int n = 8192;
    size_t bytes = (size_t)n * n * 2;
    // Random operands: constant or zero data makes the tensor cores draw less power and run
    // faster than they do on real data, which would flatter the ceiling.
    float *host = xmalloc(bytes / 2 * sizeof(float));
    fill_uniform(host, (int64_t)n * n, -1.0f, 1.0f, 17, 1);
    void *a = dev_upload(host, (int64_t)n * n, DTYPE_FP16);
    fill_uniform(host, (int64_t)n * n, -1.0f, 1.0f, 17, 2);
    void *b = dev_upload(host, (int64_t)n * n, DTYPE_FP16), *c = dev_alloc(bytes);
    free(host);
    cublasHandle_t h = gpu_cublas_handle();
    float alpha = 1.0f, beta = 0.0f;
    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
    for (int rep = 0; rep < 2; rep++) {  // first pass warms up
        CUDA_CHECK(cudaEventRecord(e0, 0));
        for (int i = 0; i < 10; i++)
            CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &alpha, a, CUDA_R_16F, n, b,
                                      CUDA_R_16F, n, &beta, c, CUDA_R_16F, n, CUBLAS_COMPUTE_32F,
                                      CUBLAS_GEMM_DEFAULT));
        CUDA_CHECK(cudaEventRecord(e1, 0));
    }
    CUDA_CHECK(cudaEventSynchronize(e1));
    float ms;
    CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
    dev_free(a);
    dev_free(b);
    dev_free(c);
    return 10 * 2.0 * n * (double)n * n / (ms * 1e-3) / 1e12;
}

// A horizontal bar per step (mean ms), and a dashed line at the floor: the layer's FLOPs at
// the measured rate of a large matrix product.
// (floor_ms <= 0: no GPU, no floor line.)
static void write_svg(const char *path, const char *gpu, const LayerConfig *c, const Row *rows, int n,
                      double floor_ms, const Baseline *base, int nbase) {
    FILE *f = output_open(path, "w");
    double max_ms = floor_ms;
    for (int i = 0; i < n; i++) max_ms = fmax(max_ms, rows[i].report.mean_ms);
    for (int i = 0; i < nbase; i++) max_ms = fmax(max_ms, base[i].mean_ms);
    const int left = 230, width = 460, bar = 26, gap = 10, top = 50;
    int height = top + (n + nbase) * (bar + gap) + 50;
    double sx = width / (max_ms * 1.1);
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
            "font-family=\"sans-serif\" font-size=\"13\">\n", left + width + 80, height);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f, "<text x=\"10\" y=\"22\" font-size=\"15\" font-weight=\"bold\">Training step time "
            "(fwd+bwd), %s, h%d ffn%d heads%d s%d b%d</text>\n",
            dtype_name(c->dtype), c->hidden, c->ffn, c->heads, c->seq, c->batch);
    fprintf(f, "<text x=\"10\" y=\"40\" fill=\"#555\">%s</text>\n", gpu);
    for (int i = 0; i < n; i++) {
        int y = top + i * (bar + gap);
        double ms = rows[i].report.mean_ms;
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%s %s</text>\n", left - 8,
                y + bar - 8, rows[i].id, rows[i].title);
        fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%.1f\" height=\"%d\" fill=\"#76b900\"/>\n", left, y,
                ms * sx, bar);
        fprintf(f, "<text x=\"%.1f\" y=\"%d\">%.2f ms</text>\n", left + ms * sx + 5, y + bar - 8, ms);
    }
    for (int i = 0; i < nbase; i++) {
        int y = top + (n + i) * (bar + gap);
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%s</text>\n", left - 8, y + bar - 8, base[i].name);
        fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%.1f\" height=\"%d\" fill=\"#999\"/>\n", left, y,
                base[i].mean_ms * sx, bar);
        fprintf(f, "<text x=\"%.1f\" y=\"%d\">%.2f ms</text>\n", left + base[i].mean_ms * sx + 5, y + bar - 8,
                base[i].mean_ms);
    }
    double fx = left + floor_ms * sx;
    int bottom = top + (n + nbase) * (bar + gap);
    if (floor_ms > 0) fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#c00\" "
            "stroke-dasharray=\"5,4\" stroke-width=\"2\"/>\n", fx, top - 5, fx, bottom);
    if (floor_ms > 0)
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" fill=\"#c00\">floor %.2f ms: all FLOPs at the measured "
                "large-GEMM rate</text>\n", fx, bottom + 18, floor_ms);
    else
        fprintf(f, "<text x=\"10\" y=\"%d\" fill=\"#c00\">no GPU here: the CPU reference at the tiny "
                "preset, not a GPU step</text>\n", bottom + 18);
    fprintf(f, "</svg>\n");
    output_commit(f, path);
    printf("wrote %s\n", path);
}

// The flags a single step takes that compare cannot mean.
static void refuse_step_only_flags(const Options *o) {
    if (o->check)
        fail_user("compare checks every step at the small preset by itself (--skip-check to skip): drop --check");
    const char *flag = o->weights_path ? "--weights" : o->input_path ? "--input" : o->save_path ? "--save" : NULL;
    if (flag)
        fail_user("compare runs every step on random weights and inputs, so %s would be ignored: run the step's own "
                  "binary with it", flag);
}

int main(int argc, char **argv) {
    Options o;
    options_defaults(&o);
    options_parse(argc, argv, &o, &COMPARE);
    refuse_step_only_flags(&o);
    const LayerConfig *cfg = &o.layer;
    // Which steps run: one the user named that cannot run this configuration is refused now;
    // of all steps (no --steps), those that cannot are skipped with the reason.
    int runnable[16] = {0}, nrunnable = 0;
    for (int s = 0; s < NUM_STEPS; s++) {
        const StepOps *step = ALL_STEPS[s];
        if (!step_selected(s)) continue;
        const char *why = step->unsupported ? step->unsupported(cfg) : NULL;
        if (why && flags.steps_given)
            fail_user("step %s cannot run this configuration (hidden %d / heads %d = head_dim %d): %s", step->id,
                      cfg->hidden, cfg->heads, layer_head_dim(cfg), why);
        if (why) printf("step %s skipped: %s\n", step->id, why);
        else runnable[s] = 1, nrunnable++;
    }
    if (gpu_count() == 0) return run_cpu_only(&o);
    gpu_require();
    LayerConfig check_cfg;
    layer_config_preset("small", &check_cfg);
    check_cfg.dtype = cfg->dtype;
    check_cfg.causal = cfg->causal;
    check_cfg.attn_dropout = cfg->attn_dropout;
    check_cfg.hidden_dropout = cfg->hidden_dropout;

    printf("GPU: %s\n", gpu_description());
    printf("timing: hidden %d, ffn %d, heads %d, seq %d, batch %d, %s, dropout %g; "
           "%d warm-up + %d timed steps\n", cfg->hidden, cfg->ffn, cfg->heads, cfg->seq, cfg->batch,
           dtype_name(cfg->dtype), cfg->attn_dropout, o.warmup, o.iters);
    if (!flags.skip_check)
        printf("check: the small preset (hidden %d, seq %d) against the CPU reference\n",
               check_cfg.hidden, check_cfg.seq);
    double gemm_tflops = measure_gemm_tflops();
    double floor_ms = layer_train_flops(cfg) / (gemm_tflops * 1e12) * 1e3;
    printf("large fp16 GEMM: %.0f TFLOP/s -> floor for this layer %.2f ms\n\n", gemm_tflops, floor_ms);

    Row *rows = xcalloc((size_t)(nrunnable ? nrunnable : 1), sizeof(Row));
    int n = 0;
    for (int s = 0; s < NUM_STEPS; s++) {
        const StepOps *step = ALL_STEPS[s];
        if (!runnable[s]) continue;
        Row *row = &rows[n];
        *row = (Row){.id = step->id, .title = step->title, .whats_new = step->whats_new};
        n++;
        StepReport check = {.max_rel_error = -1, .check_passed = -1};
        if (!flags.skip_check) {
            LayerParams p;
            LayerInputs in;
            layer_params_alloc(&check_cfg, &p);
            layer_params_init_random(&check_cfg, check_cfg.seed, &p);
            layer_params_round(&check_cfg, &p);
            layer_inputs_alloc(&check_cfg, &in);
            layer_inputs_init_random(&check_cfg, check_cfg.seed + 1, &in);
            layer_inputs_round(&check_cfg, &in);
            step_check(step, &check_cfg, &p, &in, NULL, &check);
            layer_params_free(&p);
            layer_inputs_free(&in);
        }
        LayerParams params;
        LayerInputs inputs;
        layer_params_alloc(cfg, &params);
        layer_params_init_random(cfg, cfg->seed, &params);
        layer_params_round(cfg, &params);
        layer_inputs_alloc(cfg, &inputs);
        layer_inputs_init_random(cfg, cfg->seed + 1, &inputs);
        layer_inputs_round(cfg, &inputs);
        row->report = step_time(step, cfg, &params, &inputs, o.warmup, o.iters);
        row->report.max_rel_error = check.max_rel_error;
        row->report.check_passed = check.check_passed;
        layer_params_free(&params);
        layer_inputs_free(&inputs);
        printf("step %s done: %.2f ms\n", step->id, row->report.mean_ms);
        fflush(stdout);
    }

    printf("\n%-22s %-46s %9s %8s %8s %9s %14s\n", "step", "what is new", "mean ms", "speedup",
           "TFLOP/s", "peak MiB", "max rel.err");
    double base = n ? rows[0].report.mean_ms : 0;
    int failed = 0;
    for (int i = 0; i < n; i++) {
        const StepReport *r = &rows[i].report;
        char err[32];
        if (r->check_passed < 0) snprintf(err, sizeof err, "not checked");
        else snprintf(err, sizeof err, "%.2e %s", r->max_rel_error, r->check_passed ? "ok" : "FAIL");
        failed += r->check_passed == 0;
        printf("%-22s %-46.46s %9.2f %7.2fx %8.1f %9.0f %14s\n", rows[i].id,
               rows[i].whats_new, r->mean_ms, base / r->mean_ms, r->tflops, r->peak_mib, err);
    }
    for (int i = 0; i < flags.ntorch; i++)
        printf("%-22s %-46s %9.2f %7.2fx\n", flags.torch[i].name, "the same layer in PyTorch (same GPU)",
               flags.torch[i].mean_ms, base / flags.torch[i].mean_ms);
    printf("%-22s %-46s %9.2f\n", "floor", "layer FLOPs at the large-GEMM rate", floor_ms);
    if (o.json_path) write_json(o.json_path, gpu_description(), cfg, rows, n, gemm_tflops);
    if (flags.svg_path) write_svg(flags.svg_path, gpu_description(), cfg, rows, n, floor_ms, flags.torch, flags.ntorch);
    free(rows);
    return failed ? 1 : 0;
}
