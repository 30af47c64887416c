// The per-step comparison: every step at one configuration, side by side.
//
// For each step: --check at the small preset (max relative error against the CPU reference),
// then the timing at the chosen configuration (default: the quickstart). Prints a table and
// writes it as JSON (--json) and as an SVG bar chart (--svg). Without a GPU it says so and
// runs what can run - the CPU reference at the tiny preset - and writes that, marked as such,
// to the same files. Everything it is told is checked before any work: the steps named by
// --steps exist, the --pytorch file reads, the output files can be written; the flags that
// make no sense here (--check, --weights, --input, --save) are refused.
//
// Each step's fraction of its floor (model FLOPs utilisation against the GEMM rate measured
// here, and time over floor: common/core/breakdown.h) is in the table. With --breakdown, each
// step also records five of its timed steps by category; the table of categories beside their
// floors (in a burst and at the power limit) follows, and the SVG becomes a stacked bar per step
// with its burst floor's bar under it.
//
// The chart is drawn here, in C, rather than with a plotting library: it is a few rectangles,
// and this way the one binary writes table, JSON and chart on any machine, Python or not.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>

#include "common/core/errors.h"
#include "common/gpu/cuda_check.h"
#include "common/core/breakdown.h"
#include "common/gpu/gpu.h"
#include "common/io/output_file.h"
#include "kernels/attention/attention.h"
#include "modules/linear.h"
#include "reference/reference.h"
#include "steps/driver/breakdown_report.h"
#include "steps/driver/floors.h"
#include "steps/driver/step.h"
#include "steps/compare/registry.h"

// Timings of the same layer in PyTorch (tools/pytorch_compare.py writes them), shown beside
// our steps: {"PyTorch eager": {"mean_ms": 26.0, "peak_mib": 9665, "categories": {"gemm_fprop":
// 4.1, ...}}, ...}. A category PyTorch's profiler did not give is NAN.
typedef struct {
    char name[64];
    double mean_ms, peak_mib;
    int has_categories;
    double category_ms[NUM_CATEGORIES];
} Baseline;

enum { MAX_BASELINES = 8 };

// compare's own flags (StepOps.parse_flag has no context, so they live here).
static struct {
    const char *svg_path;
    const char *pytorch_paths[MAX_BASELINES];  // --pytorch, as given (none may be overwritten)
    int npytorch;
    int skip_check;
    int selected[16];  // by index into ALL_STEPS; all of them when --steps is not given
    int steps_given;
    Baseline torch[MAX_BASELINES];
    int ntorch;
} flags;

// Read while the flags are: a bad --pytorch file is reported before any work.
static void load_baselines(const char *path) {
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
        fail_user("--pytorch %s: that is a folder; give the JSON file tools/pytorch_compare.py wrote", path);
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
        Baseline *b = &flags.torch[flags.ntorch++];
        snprintf(b->name, sizeof b->name, "%s", key);
        b->mean_ms = json_number_value(ms);
        json_t *peak = json_object_get(value, "peak_mib");
        b->peak_mib = json_is_number(peak) ? json_number_value(peak) : NAN;
        json_t *cats = json_object_get(value, "categories");
        b->has_categories = json_is_object(cats);
        for (int c = 0; c < NUM_CATEGORIES; c++) {
            json_t *v = b->has_categories ? json_object_get(cats, category_key((Category)c)) : NULL;
            b->category_ms[c] = json_is_number(v) ? json_number_value(v) : NAN;
        }
    }
    json_decref(root);
    if (flags.ntorch == 0) fail_user("--pytorch %s: no entry with a \"mean_ms\" number", path);
}

// A step's short name: "01" for 01_naive, "06u" for 06u_parallel_unfused.
static void short_id(const StepOps *s, char out[8]) {
    size_t n = strcspn(s->id, "_");
    snprintf(out, 8, "%.*s", (int)(n < 7 ? n : 7), s->id);
}

// The steps compare knows, by short name ("01, 02, ..., 06f"), for its messages.
static const char *known_steps(void) {
    static char known[256];
    size_t used = 0;
    known[0] = '\0';
    for (int s = 0; s < NUM_STEPS && used < sizeof known; s++) {
        char id[8];
        short_id(ALL_STEPS[s], id);
        used += (size_t)snprintf(known + used, sizeof known - used, "%s%s", s ? ", " : "", id);
    }
    return known;
}

// --steps 01,04,06u: each item names a step by its number (all of its variants: "06" is 06,
// 06u and 06f; "4" is "04"), its short name ("06u") or its full id. One that names no step is
// refused, and so is a list that names none at all ("--steps=" or "--steps ,").
static void select_steps(const char *list) {
    flags.steps_given = 1;
    char *copy = strdup(list);
    if (!copy) DIE("out of memory");
    int any = 0;
    for (char *save = NULL, *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char number[3] = "";
        if (strlen(item) == 1 && item[0] >= '1' && item[0] <= '9') snprintf(number, sizeof number, "0%c", item[0]);
        const char *want = number[0] ? number : item;
        int found = 0;
        for (int s = 0; s < NUM_STEPS; s++) {
            char id[8];
            short_id(ALL_STEPS[s], id);
            if (!strcmp(want, id) || !strcmp(want, ALL_STEPS[s]->id) || (strlen(want) == 2 && !strncmp(want, id, 2)))
                flags.selected[s] = found = 1;
        }
        if (!found)
            fail_user("--steps %s: compare has no step '%s' (it runs %s; step 07, tensor parallel, runs on its own: "
                      "step07_tensor_parallel, chapter 07)",
                      list, item, known_steps());
        any = 1;
    }
    free(copy);
    if (!any) fail_user("--steps '%s' names no step: give a comma-separated list, e.g. --steps 01,04 (of %s)", list,
                        known_steps());
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
        if (flags.npytorch < MAX_BASELINES) flags.pytorch_paths[flags.npytorch++] = value;
    } else {
        return 0;
    }
    return 1;
}

static const StepOps COMPARE = {
    .parse_flag = parse_compare_flag,
    .flags_help =
        "  --steps LIST         the steps to run, e.g. 01,04 or 1,4 (06 is all three variants; 06u, 06f one)\n"
        "  --skip-check         time only; no check at the small preset\n"
        "  --json FILE          the table as JSON (also without a GPU: the CPU reference's time)\n"
        "  --svg FILE           the table as an SVG bar chart (also without a GPU); with --breakdown,\n"
        "                       a stacked bar per step beside its floor\n"
        "  --pytorch FILE       PyTorch's times (tools/pytorch_compare.py) as extra rows\n"
        "compare takes the layer flags above and --warmup, --iters, --breakdown; not --check (it checks\n"
        "every step at the small preset unless --skip-check), --weights, --input or --save (each step\n"
        "runs on random weights and inputs; for those, run the step's own binary).\n",
};

static int step_selected(int s) { return !flags.steps_given || flags.selected[s]; }

// The flags a single step takes that compare cannot mean.
static void refuse_step_only_flags(const Options *o) {
    if (o->check)
        fail_user("compare checks every step at the small preset by itself (--skip-check to skip): drop --check");
    const char *flag = o->weights_path ? "--weights" : o->input_path ? "--input" : o->save_path ? "--save" : NULL;
    if (flag)
        fail_user("compare runs every step on random weights and inputs, so %s would be ignored: run the step's own "
                  "binary with it", flag);
}

// One row of the table: a step, or (step NULL) the CPU reference where there is no GPU.
typedef struct {
    const StepOps *step;
    const char *id, *title, *whats_new;
    StepReport report;
    double floor_ms[NUM_CATEGORIES];  // the step's floor per category (its work at the measured rates)
    double floor_total_ms;            // their sum; NAN where a rate is missing
    double limit_floor_ms[NUM_CATEGORIES];  // the same at the rates held at the power limit (--breakdown)
    double limit_floor_total_ms;
    double mfu;                       // model FLOPs / mean time / the GEMM rate of its precision
} Row;

static void write_json(const char *path, const LayerConfig *c, const Row *rows, int n,
                       const MeasuredRates *rates, const Baseline *base, int nbase) {
    FILE *f = output_open(path, "w");
    fprintf(f, "{\n  \"gpu\": \"%s\",\n  \"config\": {\"hidden\": %d, \"ffn\": %d, \"heads\": %d, "
            "\"seq\": %d, \"batch\": %d, \"dtype\": \"%s\", \"dropout\": %g},\n"
            "  \"gemm_tflops\": %.1f,\n  \"floor_ms\": %.3f,\n  \"rates\": ",
            gpu_description(), c->hidden, c->ffn, c->heads, c->seq, c->batch, dtype_name(c->dtype),
            c->attn_dropout, rates->gemm_tflops, layer_train_flops(c) / (rates->gemm_tflops * 1e12) * 1e3);
    fprint_json(f, rates_json(rates));
    fprintf(f, ",\n  \"steps\": [\n");
    for (int i = 0; i < n; i++) {
        const StepReport *r = &rows[i].report;
        fprintf(f, "    {\"step\": \"%s\", \"title\": \"%s\", \"whats_new\": \"%s\", \"mean_ms\": %.4f, "
                "\"median_ms\": %.4f, \"tflops\": %.2f, \"peak_mib\": %.1f, \"max_rel_error\": %.4g, "
                "\"check_passed\": %d, \"breakdown\": ",
                rows[i].step->id, rows[i].step->title, rows[i].step->whats_new, r->mean_ms,
                r->median_ms, r->tflops, r->peak_mib, r->max_rel_error, r->check_passed);
        fprint_json(f, step_breakdown_json(rows[i].step, c, rates, r));
        fprintf(f, "}%s\n", i + 1 < n ? "," : "");
    }
    fprintf(f, "  ],\n  \"pytorch\": [\n");
    for (int i = 0; i < nbase; i++) {
        json_t *o = json_object(), *cats = json_object();
        json_object_set_new(o, "name", json_string(base[i].name));
        json_object_set_new(o, "mean_ms", json_real(base[i].mean_ms));
        json_object_set_new(o, "peak_mib", isnan(base[i].peak_mib) ? json_null() : json_real(base[i].peak_mib));
        for (int k = 0; k < NUM_CATEGORIES; k++)
            if (!isnan(base[i].category_ms[k]))
                json_object_set_new(cats, category_key((Category)k), json_real(base[i].category_ms[k]));
        json_object_set_new(o, "categories", base[i].has_categories ? cats : (json_decref(cats), json_null()));
        fprintf(f, "    ");
        fprint_json(f, o);
        fprintf(f, "%s\n", i + 1 < nbase ? "," : "");
    }
    fprintf(f, "  ]\n}\n");
    output_commit(f, path);
}

// A horizontal bar per step (mean ms), and a dashed line at the floor: the layer's FLOPs at
// the measured rate of a large matrix product (floor_ms <= 0: no GPU, no floor).
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
    if (floor_ms > 0) {
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#c00\" "
                "stroke-dasharray=\"5,4\" stroke-width=\"2\"/>\n", fx, top - 5, fx, bottom);
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" fill=\"#c00\">floor %.2f ms: all FLOPs at the measured "
                "large-GEMM rate</text>\n", fx, bottom + 18, floor_ms);
    } else {
        fprintf(f, "<text x=\"10\" y=\"%d\" fill=\"#c00\">no GPU here: the CPU reference at the tiny "
                "preset, computed in float32 (the title's dtype only labels it), not a GPU step</text>\n",
                bottom + 18);
    }
    fprintf(f, "</svg>\n");
    output_commit(f, path);
    printf("wrote %s\n", path);
}

// ---- the breakdown: table and stacked chart (--breakdown) -----------------------------------
// Short column labels and chart colours, by category.
static const char *const SHORT[NUM_CATEGORIES] = {
    [CAT_OTHER] = "other", [CAT_GEMM_FPROP] = "fprop", [CAT_GEMM_DGRAD] = "dgrad",
    [CAT_GEMM_WGRAD] = "wgrad", [CAT_ATTN_FWD] = "attn fwd", [CAT_ATTN_BWD] = "attn bwd",
    [CAT_LAYERNORM] = "LN", [CAT_ELEMENTWISE] = "eltwise", [CAT_FP8_CAST] = "FP8 cast",
    [CAT_COMM] = "comm",
};
static const char *const COLOUR[NUM_CATEGORIES] = {
    [CAT_OTHER] = "#b0b0b0", [CAT_GEMM_FPROP] = "#1f5fa8", [CAT_GEMM_DGRAD] = "#4a90d9",
    [CAT_GEMM_WGRAD] = "#9cc4ee", [CAT_ATTN_FWD] = "#c62828", [CAT_ATTN_BWD] = "#f28b82",
    [CAT_LAYERNORM] = "#2e7d32", [CAT_ELEMENTWISE] = "#ef8a17", [CAT_FP8_CAST] = "#7b4fa6",
    [CAT_COMM] = "#795548",
};

// The categories worth a column: those with time or a floor in any row.
static void used_categories(const Row *rows, int n, const Baseline *base, int nbase, int used[NUM_CATEGORIES]) {
    for (int c = 0; c < NUM_CATEGORIES; c++) {
        used[c] = c == CAT_OTHER;
        for (int i = 0; i < n; i++) used[c] |= rows[i].report.category_ms[c] > 0 || rows[i].floor_ms[c] > 0;
        for (int i = 0; i < nbase; i++) used[c] |= base[i].category_ms[c] > 0;
    }
}

static void print_cells(const double ms[NUM_CATEGORIES], const int used[NUM_CATEGORIES]) {
    for (int c = 1; c <= NUM_CATEGORIES; c++) {
        int k = c % NUM_CATEGORIES;  // "other" last
        if (!used[k]) continue;
        if (isnan(ms[k])) printf(" %8s", "-");
        else printf(" %8.3f", ms[k]);
    }
}

// A floor row of the breakdown table: the categories' floors, their sum and the sum over the
// step's mean time ("-" where a rate was not measured).
static void print_floor_row(const char *name, const double floor_ms[NUM_CATEGORIES], double total_ms,
                            double mean_ms, const int used[NUM_CATEGORIES]) {
    printf("%-22s", name);
    print_cells(floor_ms, used);
    if (isnan(total_ms)) printf(" %9s\n", "-");
    else printf(" %9.3f %9s %7.1f%%\n", total_ms, "", 100.0 * total_ms / mean_ms);
}

static void print_breakdown_table(const Row *rows, int n, const Baseline *base, int nbase) {
    int used[NUM_CATEGORIES];
    used_categories(rows, n, base, nbase, used);
    printf("\nWhere each step's time goes, ms (the mean of five steps recorded among the timed ones, at the GPU's clocks; the\n"
           "floor rows under it: the same work at the rates measured above, in a burst and held at the power\n"
           "limit; their last column: floor / mean)\ntimer: %s\n%-22s",
           breakdown_timer_words(n > 0 ? rows[0].report.breakdown_timer : NULL), "step");
    for (int c = 1; c <= NUM_CATEGORIES; c++)
        if (used[c % NUM_CATEGORIES]) printf(" %8s", SHORT[c % NUM_CATEGORIES]);
    printf(" %9s %9s %8s\n", "sum", "mean", "sum/mean");
    for (int i = 0; i < n; i++) {
        const StepReport *r = &rows[i].report;
        printf("%-22s", rows[i].step->id);
        print_cells(r->category_ms, used);
        printf(" %9.3f %9.3f %7.1f%%\n", r->breakdown_ms, r->mean_ms, 100.0 * r->breakdown_ms / r->mean_ms);
        print_floor_row("  floor", rows[i].floor_ms, rows[i].floor_total_ms, r->mean_ms, used);
        print_floor_row("  at power limit", rows[i].limit_floor_ms, rows[i].limit_floor_total_ms, r->mean_ms, used);
    }
    for (int i = 0; i < nbase; i++) {
        if (!base[i].has_categories) continue;
        double sum = 0;
        for (int c = 0; c < NUM_CATEGORIES; c++) sum += isnan(base[i].category_ms[c]) ? 0 : base[i].category_ms[c];
        printf("%-22.22s", base[i].name);
        print_cells(base[i].category_ms, used);
        printf(" %9.3f %9.3f %7.1f%%   (PyTorch's profiler, one step)\n", sum, base[i].mean_ms,
               100.0 * sum / base[i].mean_ms);
    }
}

// One stacked bar: each category's segment in its colour, from x0, `scale` pixels per ms.
static double svg_stack(FILE *f, const double ms[NUM_CATEGORIES], double x0, int y, int height, double scale,
                        double opacity) {
    double x = x0;
    for (int c = 1; c <= NUM_CATEGORIES; c++) {
        int k = c % NUM_CATEGORIES;  // "other" last, at the end of the bar
        if (isnan(ms[k]) || ms[k] <= 0) continue;
        fprintf(f, "<rect x=\"%.2f\" y=\"%d\" width=\"%.2f\" height=\"%d\" fill=\"%s\" fill-opacity=\"%.2f\">"
                "<title>%s: %.3f ms</title></rect>\n", x, y, ms[k] * scale, height, COLOUR[k], opacity,
                category_name((Category)k), ms[k]);
        x += ms[k] * scale;
    }
    return x;
}

// A stacked bar per step (the mean of the recorded steps, by category) with a thin bar under it (the same
// categories' floors), then PyTorch's rows: stacked where its profiler gave categories.
static void write_breakdown_svg(const char *path, const LayerConfig *c, const Row *rows, int n, const Baseline *base,
                                int nbase) {
    FILE *f = output_open(path, "w");
    int used[NUM_CATEGORIES];
    used_categories(rows, n, base, nbase, used);
    double max_ms = 0;
    for (int i = 0; i < n; i++) {
        max_ms = fmax(max_ms, fmax(rows[i].report.breakdown_ms, rows[i].report.mean_ms));
        if (!isnan(rows[i].floor_total_ms)) max_ms = fmax(max_ms, rows[i].floor_total_ms);
    }
    for (int i = 0; i < nbase; i++) max_ms = fmax(max_ms, base[i].mean_ms);
    const int left = 250, width = 560, bar = 18, floor_bar = 7, row_h = 38, top = 88;
    const double sx = width / (max_ms * 1.12);
    const int height = top + (n + nbase) * row_h + 40;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" "
            "font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", left + width + 120, height);
    fprintf(f, "<text x=\"10\" y=\"20\" font-size=\"15\" font-weight=\"bold\">Where a training step's time goes "
            "(fwd+bwd), %s, h%d ffn%d heads%d s%d b%d</text>\n", dtype_name(c->dtype), c->hidden, c->ffn, c->heads,
            c->seq, c->batch);
    fprintf(f, "<text x=\"10\" y=\"37\" fill=\"#555\">%s; thick bar: the mean of 5 recorded steps by category; thin bar "
            "under it: each category's floor (its work at rates measured in this run)</text>\n", gpu_description());
    int lx = 10;
    for (int k = 1; k <= NUM_CATEGORIES; k++) {
        int cat = k % NUM_CATEGORIES;
        if (!used[cat]) continue;
        fprintf(f, "<rect x=\"%d\" y=\"50\" width=\"12\" height=\"12\" fill=\"%s\"/><text x=\"%d\" y=\"60\">%s</text>\n",
                lx, COLOUR[cat], lx + 16, SHORT[cat]);
        lx += 24 + 8 * (int)strlen(SHORT[cat]);
    }
    for (int i = 0; i < n; i++) {
        const StepReport *r = &rows[i].report;
        const int y = top + i * row_h;
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%s</text>\n", left - 8, y + bar - 5, rows[i].step->id);
        double end = svg_stack(f, r->category_ms, left, y, bar, sx, 1.0);
        fprintf(f, "<text x=\"%.1f\" y=\"%d\">%.2f ms</text>\n", end + 5, y + bar - 5, r->breakdown_ms);
        end = svg_stack(f, rows[i].floor_ms, left, y + bar + 2, floor_bar, sx, 0.6);
        if (isnan(rows[i].floor_total_ms))
            fprintf(f, "<text x=\"%.1f\" y=\"%d\" font-size=\"10\" fill=\"#555\">floor: a rate was not measured</text>\n",
                    end + 5, y + bar + floor_bar + 1);
        else
            fprintf(f, "<text x=\"%.1f\" y=\"%d\" font-size=\"10\" fill=\"#555\">floor %.2f</text>\n", end + 5,
                    y + bar + floor_bar + 1, rows[i].floor_total_ms);
    }
    for (int i = 0; i < nbase; i++) {
        const int y = top + (n + i) * row_h;
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%s</text>\n", left - 8, y + bar - 5, base[i].name);
        double end;
        if (base[i].has_categories) {
            end = svg_stack(f, base[i].category_ms, left, y, bar, sx, 1.0);
        } else {
            end = left + base[i].mean_ms * sx;
            fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%.2f\" height=\"%d\" fill=\"#999\"/>\n", left, y,
                    base[i].mean_ms * sx, bar);
        }
        fprintf(f, "<text x=\"%.1f\" y=\"%d\">%.2f ms (mean)</text>\n", end + 5, y + bar - 5, base[i].mean_ms);
    }
    fprintf(f, "</svg>\n");
    output_commit(f, path);
    printf("wrote %s\n", path);
}

// Without a GPU: the table as JSON, with the CPU reference's row (jansson; keys in order).
static void write_cpu_json(const char *path, const char *gpu, const LayerConfig *c, const Row *row) {
    const StepReport *r = &row->report;
    json_t *root = json_object();
    json_object_set_new(root, "gpu", json_string(gpu));
    json_object_set_new(root, "config", json_pack("{s:i, s:i, s:i, s:i, s:i, s:s, s:f}", "hidden", c->hidden, "ffn",
                                                  c->ffn, "heads", c->heads, "seq", c->seq, "batch", c->batch,
                                                  "dtype", dtype_name(c->dtype), "dropout", (double)c->attn_dropout));
    json_object_set_new(root, "gemm_tflops", json_null());
    json_object_set_new(root, "floor_ms", json_null());
    // What does not apply without a GPU is null, as gemm_tflops and floor_ms: no device memory,
    // and the reference is what the steps are checked against, so it has no error of its own.
    json_object_set_new(root, "computed_in", json_string("float32 with double accumulation, whatever config.dtype says"));
    json_object_set_new(root, "steps",
                        json_pack("[{s:s, s:s, s:s, s:f, s:f, s:f, s:n, s:n, s:n}]", "step", row->id, "title",
                                  row->title, "whats_new", row->whats_new, "mean_ms", r->mean_ms, "median_ms",
                                  r->median_ms, "tflops", r->tflops, "peak_mib", "max_rel_error", "check_passed"));
    FILE *f = output_open(path, "w");
    if (json_dumpf(root, f, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(7)) != 0)
        DIE("json_dumpf failed for %s", path);
    fputc('\n', f);
    output_commit(f, path);
    json_decref(root);
    printf("wrote %s\n", path);
}

static int compare_doubles(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// Without a GPU: time the CPU reference at the tiny preset, so the command still shows
// something real on a laptop or in CI, and write that to the --json and --svg files asked for.
static int run_cpu_only(const Options *o) {
    printf("No usable CUDA GPU here: %s.\n", gpu_unavailable_reason());
    printf("Running what can run on the CPU: the reference layer at the tiny preset.\n");
    printf("(Without a GPU only --json and --svg apply. The CPU reference computes in float32 with double\n"
           " accumulation whatever --dtype says - it only labels the files; the steps, their sizes,\n"
           " --breakdown and --pytorch describe GPU runs.)\n");
    if (o->breakdown) printf("--breakdown: not run (it times GPU kernels; there is no GPU here).\n");
    if (flags.ntorch > 0) printf("--pytorch: its rows are drawn in the SVG, not timed against a GPU step here.\n");
    printf("\n");
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
    enum { ITERS = 5 };
    double ms[ITERS];
    for (int i = 0; i < ITERS; i++) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        ref_layer_train_step(&cfg, &params, &inputs, (uint64_t)i, &res);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        ms[i] = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) * 1e-6;
    }
    Row row = {.id = "reference", .title = "(CPU, float32)", .whats_new = "plain C, double accumulation (no GPU here)"};
    StepReport *r = &row.report;
    r->min_ms = ms[0];
    for (int i = 0; i < ITERS; i++) r->mean_ms += ms[i] / ITERS, r->min_ms = fmin(r->min_ms, ms[i]);
    qsort(ms, ITERS, sizeof ms[0], compare_doubles);
    r->median_ms = ms[ITERS / 2];
    r->tflops = layer_train_flops(&cfg) / (r->mean_ms * 1e-3) / 1e12;
    r->max_rel_error = -1;
    r->check_passed = -1;
    double out_norm = 0;
    for (int64_t i = 0; i < layer_tokens(&cfg) * cfg.hidden; i++) out_norm += (double)res.out[i] * res.out[i];
    printf("%-22s %-40s %10s %12s\n", "step", "what", "mean ms", "GFLOP/s");
    printf("%-22s %-40s %10.2f %12.2f\n", "reference (CPU)", "plain C, double accumulation", r->mean_ms,
           r->tflops * 1e3);
    printf("\n(hidden %d, ffn %d, heads %d, seq %d, batch %d; ||out|| = %.4f)\n", cfg.hidden, cfg.ffn,
           cfg.heads, cfg.seq, cfg.batch, sqrt(out_norm));
    printf("The GPU steps need an NVIDIA GPU of compute capability 8.0 or newer (8.9 for FP8): see README.md, \"Which GPUs\".\n");
    char gpu[320];
    snprintf(gpu, sizeof gpu, "none: %s", gpu_unavailable_reason());
    if (o->json_path) write_cpu_json(o->json_path, gpu, &cfg, &row);
    if (flags.svg_path) write_svg(flags.svg_path, gpu, &cfg, &row, 1, 0.0, flags.torch, 0);
    layer_params_free(&params);
    layer_inputs_free(&inputs);
    layer_results_free(&res);
    return 0;
}

int main(int argc, char **argv) {
    Options o;
    options_defaults(&o);
    options_parse(argc, argv, &o, &COMPARE);
    refuse_step_only_flags(&o);
    // No output over an input (a --pytorch file) or over the other output.
    output_check_distinct("--json", o.json_path, "--svg", flags.svg_path);
    for (int i = 0; i < flags.npytorch; i++) {
        output_check_distinct("--json", o.json_path, "--pytorch", flags.pytorch_paths[i]);
        output_check_distinct("--svg", flags.svg_path, "--pytorch", flags.pytorch_paths[i]);
    }
    const LayerConfig *cfg = &o.layer;
    // A step the user named that cannot run this configuration is refused now; of all steps
    // (no --steps), those that cannot are skipped below with the reason.
    for (int s = 0; s < NUM_STEPS && flags.steps_given; s++) {
        const StepOps *step = ALL_STEPS[s];
        const char *why = step_selected(s) && step->unsupported ? step->unsupported(cfg) : NULL;
        if (why)
            fail_user("step %s cannot run this configuration (hidden %d / heads %d = head_dim %d): %s", step->id,
                      cfg->hidden, cfg->heads, layer_head_dim(cfg), why);
    }
    require_valid_environment();  // a bad switch value is refused on any machine
    if (gpu_count() == 0) return run_cpu_only(&o);
    gpu_require();
    LayerConfig check_cfg;
    layer_config_preset("small", &check_cfg);
    check_cfg.dtype = cfg->dtype;
    check_cfg.causal = cfg->causal;
    check_cfg.attn_dropout = cfg->attn_dropout;
    check_cfg.hidden_dropout = cfg->hidden_dropout;
    check_cfg.deterministic = cfg->deterministic;

    printf("GPU: %s\nGPU code: %s\n", gpu_description(), gpu_code_description());
    printf("timing: hidden %d, ffn %d, heads %d, seq %d, batch %d, %s, dropout %g; "
           "%d warm-up + %d timed steps\n", cfg->hidden, cfg->ffn, cfg->heads, cfg->seq, cfg->batch,
           dtype_name(cfg->dtype), cfg->attn_dropout, o.warmup, o.iters);
    if (!flags.skip_check)
        printf("check: the small preset (hidden %d, seq %d) against the CPU reference\n",
               check_cfg.hidden, check_cfg.seq);
    int any_fp8 = 0;
    for (int s = 0; s < NUM_STEPS; s++) any_fp8 |= step_selected(s) && ALL_STEPS[s]->variant.fp8_gemms;
    const MeasuredRates rates = measure_rates(cfg, any_fp8, o.breakdown);
    print_rates(stdout, cfg, &rates);
    double floor_ms = layer_train_flops(cfg) / (rates.gemm_tflops * 1e12) * 1e3;
    printf("all the layer's FLOPs at the %s GEMM rate: %.2f ms\n\n", dtype_name(cfg->dtype), floor_ms);

    const Baseline *torch_rows = flags.torch;  // read with the flags
    const int ntorch = flags.ntorch;
    Row *rows = xcalloc((size_t)NUM_STEPS, sizeof(Row));
    int n = 0;
    for (int s = 0; s < NUM_STEPS; s++) {
        const StepOps *step = ALL_STEPS[s];
        if (!step_selected(s)) continue;
        Row *row = &rows[n];
        *row = (Row){.step = step, .id = step->id, .title = step->title, .whats_new = step->whats_new};
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
            layer_problem_init_random(&check_cfg, &p, &in);
            step_check(step, &check_cfg, &p, &in, NULL, &check);
            layer_params_free(&p);
            layer_inputs_free(&in);
        }
        LayerParams params;
        LayerInputs inputs;
        layer_problem_init_random(cfg, &params, &inputs);
        row->report = step_time(step, cfg, &params, &inputs, o.warmup, o.iters, o.breakdown);
        CategoryWork work;
        row->floor_total_ms = step_floors(step, cfg, &rates, &work, row->floor_ms);
        const MeasuredRates at_limit = rates_at_power_limit(&rates);
        row->limit_floor_total_ms = step_floors(step, cfg, &at_limit, &work, row->limit_floor_ms);
        row->mfu = step_mfu(step, cfg, &rates, row->report.mean_ms);
        row->report.max_rel_error = check.max_rel_error;
        row->report.check_passed = check.check_passed;
        layer_params_free(&params);
        layer_inputs_free(&inputs);
        printf("step %s done: %.2f ms\n", step->id, row->report.mean_ms);
        fflush(stdout);
    }

    printf("\n%-22s %-46s %9s %8s %8s %6s %8s %9s %14s\n", "step", "what is new", "mean ms", "speedup",
           "TFLOP/s", "MFU", "x floor", "peak MiB", "max rel.err");
    double base = n ? rows[0].report.mean_ms : 0;
    int failed = 0;
    for (int i = 0; i < n; i++) {
        const StepReport *r = &rows[i].report;
        char err[32];
        if (r->check_passed < 0) snprintf(err, sizeof err, "not checked");
        else snprintf(err, sizeof err, "%.2e %s", r->max_rel_error, r->check_passed ? "ok" : "FAIL");
        failed += r->check_passed == 0;
        char mfu[16] = "-", over[16] = "-";
        if (!isnan(rows[i].mfu)) snprintf(mfu, sizeof mfu, "%.1f%%", 100.0 * rows[i].mfu);
        if (!isnan(rows[i].floor_total_ms)) snprintf(over, sizeof over, "%.2fx", r->mean_ms / rows[i].floor_total_ms);
        printf("%-22s %-46.46s %9.2f %7.2fx %8.1f %6s %8s %9.0f %14s\n", rows[i].step->id,
               rows[i].step->whats_new, r->mean_ms, base / r->mean_ms, r->tflops, mfu, over, r->peak_mib, err);
    }
    for (int i = 0; i < ntorch; i++)
        printf("%-22.22s %-46s %9.2f %7.2fx %8.1f %6s %8s %9.0f\n", torch_rows[i].name,
               "the same layer in PyTorch (same GPU)", torch_rows[i].mean_ms, base / torch_rows[i].mean_ms,
               layer_train_flops(cfg) / (torch_rows[i].mean_ms * 1e-3) / 1e12, "", "", torch_rows[i].peak_mib);
    printf("%-22s %-46s %9.2f\n", "all FLOPs at GEMM rate", "the layer's FLOPs at the large-GEMM rate", floor_ms);
    printf("(MFU: model FLOPs per second over the measured GEMM rate of the step's precision; x floor: mean time\n"
           " over the sum of its categories' floors - common/core/breakdown.h)\n");
    if (o.breakdown) print_breakdown_table(rows, n, torch_rows, ntorch);
    if (o.json_path) write_json(o.json_path, cfg, rows, n, &rates, torch_rows, ntorch);
    if (flags.svg_path) {
        if (o.breakdown) write_breakdown_svg(flags.svg_path, cfg, rows, n, torch_rows, ntorch);
        else write_svg(flags.svg_path, gpu_description(), cfg, rows, n, floor_ms, torch_rows, ntorch);
    }
    free(rows);
    return failed ? 1 : 0;
}
