// The per-step comparison: every step at one configuration, side by side.
//
// For each step: --check at the small preset (max relative error against the CPU reference),
// then the timing at the chosen configuration (default: the quickstart). Prints a table and
// writes it as JSON (--json) and as an SVG bar chart (--svg). Without a GPU it says so and
// runs what can run: the CPU reference at the tiny preset.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "common/core/errors.h"
#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu.h"
#include "reference/reference.h"
#include "steps/driver/step.h"
#include "steps/compare/registry.h"

typedef struct {
    const char *json_path, *svg_path, *only_steps, *pytorch_path;
    int skip_check;
} CompareFlags;

// Timings of the same layer in PyTorch (tools/pytorch_compare.py writes them), shown beside
// our steps: {"PyTorch eager": {"mean_ms": 26.0, ...}, ...}.
typedef struct {
    char name[64];
    double mean_ms;
} Baseline;

static int load_baselines(const char *path, Baseline *out, int max) {
    json_error_t err;
    json_t *root = json_load_file(path, 0, &err);
    if (!root) fail_user("--pytorch %s: %s (line %d)", path, err.text, err.line);
    int n = 0;
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value) {
        json_t *ms = json_object_get(value, "mean_ms");
        if (!json_is_object(value) || !json_is_number(ms) || n == max) continue;
        snprintf(out[n].name, sizeof out[n].name, "%s", key);
        out[n].mean_ms = json_number_value(ms);
        n++;
    }
    json_decref(root);
    return n;
}

// Takes the comparison's own flags out of argv; the rest are the steps' shared flags.
static int take_compare_flags(int argc, char **argv, CompareFlags *f) {
    int out = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json") && i + 1 < argc) f->json_path = argv[++i];
        else if (!strcmp(argv[i], "--svg") && i + 1 < argc) f->svg_path = argv[++i];
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) f->only_steps = argv[++i];
        else if (!strcmp(argv[i], "--pytorch") && i + 1 < argc) f->pytorch_path = argv[++i];
        else if (!strcmp(argv[i], "--skip-check")) f->skip_check = 1;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: compare [--steps 01,03] [--skip-check] [--json FILE] [--svg FILE] [--pytorch FILE] "
                   "[layer flags of any step, e.g. --dtype bf16 --preset small]\n");
            argv[out++] = argv[i];
        } else argv[out++] = argv[i];
    }
    return out;
}

static int step_selected(const CompareFlags *f, const StepOps *s) {
    if (!f->only_steps) return 1;
    char id[3] = {s->id[0], s->id[1], 0};
    return strstr(f->only_steps, id) != NULL;
}

// Without a GPU: time the CPU reference at the tiny preset, so the command still shows
// something real on a laptop or in CI.
static int run_cpu_only(const LayerConfig *requested) {
    printf("No usable CUDA GPU here (%s).\n", gpu_unavailable_reason());
    printf("Running what can run on the CPU: the reference layer at the tiny preset.\n\n");
    LayerConfig cfg;
    layer_config_preset("tiny", &cfg);
    cfg.dtype = requested->dtype;
    LayerParams params;
    LayerInputs inputs;
    LayerResults res;
    layer_params_alloc(&cfg, &params);
    layer_params_init_random(&cfg, cfg.seed, &params);
    layer_inputs_alloc(&cfg, &inputs);
    layer_inputs_init_random(&cfg, cfg.seed + 1, &inputs);
    layer_results_alloc(&cfg, &res);
    const int iters = 5;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < iters; i++) ref_layer_train_step(&cfg, &params, &inputs, (uint64_t)i, &res);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = ((t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) * 1e-6) / iters;
    double out_norm = 0;
    for (int64_t i = 0; i < layer_tokens(&cfg) * cfg.hidden; i++) out_norm += (double)res.out[i] * res.out[i];
    printf("%-22s %-40s %10s %12s\n", "step", "what", "mean ms", "GFLOP/s");
    printf("%-22s %-40s %10.2f %12.2f\n", "reference (CPU)", "plain C, double accumulation", ms,
           layer_train_flops(&cfg) / (ms * 1e-3) / 1e9);
    printf("\n(hidden %d, ffn %d, heads %d, seq %d, batch %d; ||out|| = %.4f)\n", cfg.hidden, cfg.ffn,
           cfg.heads, cfg.seq, cfg.batch, sqrt(out_norm));
    printf("The GPU steps need an NVIDIA GPU (Hopper for every step): see README.md.\n");
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

typedef struct {
    const StepOps *step;
    StepReport report;
} Row;

static void write_json(const char *path, const LayerConfig *c, const Row *rows, int n,
                       double gemm_tflops) {
    FILE *f = fopen(path, "w");
    if (!f) fail_user("cannot write %s", path);
    fprintf(f, "{\n  \"gpu\": \"%s\",\n  \"config\": {\"hidden\": %d, \"ffn\": %d, \"heads\": %d, "
            "\"seq\": %d, \"batch\": %d, \"dtype\": \"%s\", \"dropout\": %g},\n"
            "  \"gemm_tflops\": %.1f,\n  \"floor_ms\": %.3f,\n  \"steps\": [\n",
            gpu_description(), c->hidden, c->ffn, c->heads, c->seq, c->batch, dtype_name(c->dtype),
            c->attn_dropout, gemm_tflops, layer_train_flops(c) / (gemm_tflops * 1e12) * 1e3);
    for (int i = 0; i < n; i++) {
        const StepReport *r = &rows[i].report;
        fprintf(f, "    {\"step\": \"%s\", \"title\": \"%s\", \"whats_new\": \"%s\", \"mean_ms\": %.4f, "
                "\"median_ms\": %.4f, \"tflops\": %.2f, \"peak_mib\": %.1f, \"max_rel_error\": %.4g, "
                "\"check_passed\": %d}%s\n",
                rows[i].step->id, rows[i].step->title, rows[i].step->whats_new, r->mean_ms,
                r->median_ms, r->tflops, r->peak_mib, r->max_rel_error, r->check_passed,
                i + 1 < n ? "," : "");
    }
    fprintf(f, "  ]\n}\n");
    fclose(f);
}

// A horizontal bar per step (mean ms), and a dashed line at the floor: the layer's FLOPs at
// the measured rate of a large matrix product.
static void write_svg(const char *path, const LayerConfig *c, const Row *rows, int n, double floor_ms,
                      const Baseline *base, int nbase) {
    FILE *f = fopen(path, "w");
    if (!f) fail_user("cannot write %s", path);
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
    fprintf(f, "<text x=\"10\" y=\"40\" fill=\"#555\">%s</text>\n", gpu_description());
    for (int i = 0; i < n; i++) {
        int y = top + i * (bar + gap);
        double ms = rows[i].report.mean_ms;
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%s %s</text>\n", left - 8,
                y + bar - 8, rows[i].step->id, rows[i].step->title);
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
    fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#c00\" "
            "stroke-dasharray=\"5,4\" stroke-width=\"2\"/>\n", fx, top - 5, fx, bottom);
    fprintf(f, "<text x=\"%.1f\" y=\"%d\" fill=\"#c00\">floor %.2f ms: all FLOPs at the measured "
            "large-GEMM rate</text>\n", fx, bottom + 18, floor_ms);
    fprintf(f, "</svg>\n");
    fclose(f);
}

int main(int argc, char **argv) {
    CompareFlags flags = {0};
    argc = take_compare_flags(argc, argv, &flags);
    Options o;
    options_defaults(&o);
    options_parse(argc, argv, &o, NULL);
    if (gpu_count() == 0) return run_cpu_only(&o.layer);
    gpu_require();
    const LayerConfig *cfg = &o.layer;
    LayerConfig check_cfg;
    layer_config_preset("small", &check_cfg);
    check_cfg.dtype = cfg->dtype;
    check_cfg.causal = cfg->causal;
    check_cfg.attn_dropout = cfg->attn_dropout;
    check_cfg.hidden_dropout = cfg->hidden_dropout;

    printf("GPU: %s\nGPU code: %s\n", gpu_description(), gpu_code_description());
    printf("timing: hidden %d, ffn %d, heads %d, seq %d, batch %d, %s, dropout %g; "
           "%d warm-up + %d timed steps\n", cfg->hidden, cfg->ffn, cfg->heads, cfg->seq, cfg->batch,
           dtype_name(cfg->dtype), cfg->attn_dropout, o.warmup, o.iters);
    if (!flags.skip_check)
        printf("check: the small preset (hidden %d, seq %d) against the CPU reference\n",
               check_cfg.hidden, check_cfg.seq);
    double gemm_tflops = measure_gemm_tflops();
    double floor_ms = layer_train_flops(cfg) / (gemm_tflops * 1e12) * 1e3;
    printf("large fp16 GEMM: %.0f TFLOP/s -> floor for this layer %.2f ms\n\n", gemm_tflops, floor_ms);

    Row *rows = xcalloc((size_t)NUM_STEPS, sizeof(Row));
    int n = 0;
    for (int s = 0; s < NUM_STEPS; s++) {
        const StepOps *step = ALL_STEPS[s];
        if (!step_selected(&flags, step)) continue;
        Row *row = &rows[n];
        row->step = step;
        const char *why = step->unsupported ? step->unsupported(cfg) : NULL;
        if (!why) why = step_gpu_refusal(step);  // FP8 below compute capability 8.9
        if (why) {
            printf("step %s skipped: %s\n", step->id, why);
            continue;
        }
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
        printf("%-22s %-46.46s %9.2f %7.2fx %8.1f %9.0f %14s\n", rows[i].step->id,
               rows[i].step->whats_new, r->mean_ms, base / r->mean_ms, r->tflops, r->peak_mib, err);
    }
    Baseline torch_rows[8];
    int ntorch = flags.pytorch_path ? load_baselines(flags.pytorch_path, torch_rows, 8) : 0;
    for (int i = 0; i < ntorch; i++)
        printf("%-22s %-46s %9.2f %7.2fx\n", torch_rows[i].name, "the same layer in PyTorch (same GPU)",
               torch_rows[i].mean_ms, base / torch_rows[i].mean_ms);
    printf("%-22s %-46s %9.2f\n", "floor", "layer FLOPs at the large-GEMM rate", floor_ms);
    if (flags.json_path) write_json(flags.json_path, cfg, rows, n, gemm_tflops);
    if (flags.svg_path) write_svg(flags.svg_path, cfg, rows, n, floor_ms, torch_rows, ntorch);
    free(rows);
    return failed ? 1 : 0;
}
