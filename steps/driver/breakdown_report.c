// The time breakdown as a step binary prints it and as JSON (steps/driver/step.h;
// the numbers come from common/core/breakdown.h and steps/driver/floors.h).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/breakdown.h"
#include "common/gpu/gpu_phase.h"
#include "steps/driver/breakdown_report.h"
#include "steps/driver/step.h"

double step_floors(const StepOps *step, const LayerConfig *cfg, const MeasuredRates *rates, CategoryWork *work,
                   double floor_ms[NUM_CATEGORIES]) {
    layer_category_work(cfg, &step->variant, work);
    category_floors(work, &step->variant, rates, floor_ms);
    return floor_total_ms(floor_ms);
}

double step_mfu(const StepOps *step, const LayerConfig *cfg, const MeasuredRates *rates, double step_ms) {
    double rate = step->variant.fp8_gemms ? rates->fp8_gemm_tflops : rates->gemm_tflops;
    return model_flops_utilisation(layer_train_flops(cfg), step_ms, rate);
}

const char *breakdown_timer_words(const char *timer_key) {
    if (!timer_key) return "none";
    const GpuPhaseTimer t = strcmp(timer_key, "cupti") == 0 ? GPU_PHASE_TIMER_CUPTI : GPU_PHASE_TIMER_EVENTS;
    static char words[2][96];
    snprintf(words[t], sizeof words[t], "%s (GPU_PHASE_TIMER=%s)", gpu_phase_timer_words(t), gpu_phase_timer_key(t));
    return words[t];
}

// "1.23" or "-" for a value that is not known.
static const char *ms_or_dash(char *buf, size_t size, double v, const char *fmt) {
    if (isnan(v)) snprintf(buf, size, "-");
    else snprintf(buf, size, fmt, v);
    return buf;
}

// A floor and the time over it as two cells: "1.234" "1.10", or "-" where not known.
static void fprint_floor_cells(FILE *f, double ms, double floor) {
    char floor_s[32], over_s[32];
    ms_or_dash(floor_s, sizeof floor_s, floor, "%.3f");
    ms_or_dash(over_s, sizeof over_s, time_over_floor(ms, floor), "%.2f");
    fprintf(f, " %9s %8s", floor_s, over_s);
}

void print_step_breakdown(FILE *f, const StepReport *r, const CategoryWork *work, const double floor_ms[NUM_CATEGORIES],
                          const double *limit_floor_ms) {
    if (!r->has_breakdown) return;
    fprintf(f, "\nWhere one step's time goes (one step after the timed ones, at the GPU's clocks; timer: %s):\n",
            breakdown_timer_words(r->breakdown_timer));
    fprintf(f, "  %-24s %9s %7s %9s %8s", "category", "ms", "share", "floor ms", "x floor");
    if (limit_floor_ms) fprintf(f, " %9s %8s", "at limit", "x limit");
    fprintf(f, "   %s\n", "work");
    for (int c = 0; c < NUM_CATEGORIES; c++) {
        const double ms = r->category_ms[c];
        if (ms == 0 && floor_ms[c] == 0) continue;  // nothing of it in this step (FP8 casts in 16 bits)
        char work_s[48] = "";
        if (work->flops[c] > 0) snprintf(work_s, sizeof work_s, "%.3g TFLOP", work->flops[c] / 1e12);
        else if (work->bytes[c] > 0) snprintf(work_s, sizeof work_s, "%.0f MiB", work->bytes[c] / 1048576.0);
        fprintf(f, "  %-24s %9.3f %6.1f%%", category_name((Category)c), ms, 100.0 * ms / r->breakdown_ms);
        fprint_floor_cells(f, ms, floor_ms[c]);
        if (limit_floor_ms) fprint_floor_cells(f, ms, limit_floor_ms[c]);
        fprintf(f, "   %s\n", work_s);
    }
    fprintf(f, "  %-24s %9.3f %6.1f%%", "sum (recorded steps)", r->breakdown_ms, 100.0);
    fprint_floor_cells(f, r->breakdown_ms, floor_total_ms(floor_ms));
    if (limit_floor_ms) fprint_floor_cells(f, r->breakdown_ms, floor_total_ms(limit_floor_ms));
    fprintf(f, "\n");
    fprintf(f, "  the timed steps' mean was %.3f ms: the recorded steps are %+.1f%% from it\n", r->mean_ms,
            100.0 * (r->breakdown_ms - r->mean_ms) / r->mean_ms);
}

// A number, or null for one that is not known (JSON has no NaN).
static json_t *number_or_null(double v) { return isnan(v) || isinf(v) ? json_null() : json_real(v); }

static json_t *rate_or_null(double v) { return v > 0 ? json_real(v) : json_null(); }

json_t *rates_json(const MeasuredRates *r) {
    json_t *o = json_object();
    json_object_set_new(o, "gemm_tflops", rate_or_null(r->gemm_tflops));
    json_object_set_new(o, "fp8_gemm_tflops", rate_or_null(r->fp8_gemm_tflops));
    json_object_set_new(o, "attention_fwd_tflops", rate_or_null(r->attn_fwd_tflops));
    json_object_set_new(o, "attention_bwd_tflops", rate_or_null(r->attn_bwd_tflops));
    json_object_set_new(o, "copy_gbps", rate_or_null(r->copy_gbps));
    json_object_set_new(o, "allreduce_gbps", rate_or_null(r->allreduce_gbps));
    json_t *limit = json_object();
    json_object_set_new(limit, "gemm_tflops", rate_or_null(r->limit_gemm_tflops));
    json_object_set_new(limit, "fp8_gemm_tflops", rate_or_null(r->limit_fp8_gemm_tflops));
    json_object_set_new(limit, "attention_fwd_tflops", rate_or_null(r->limit_attn_fwd_tflops));
    json_object_set_new(limit, "attention_bwd_tflops", rate_or_null(r->limit_attn_bwd_tflops));
    json_object_set_new(o, "at_power_limit", limit);
    return o;
}

json_t *step_breakdown_json(const StepOps *step, const LayerConfig *cfg, const MeasuredRates *rates,
                            const StepReport *r) {
    CategoryWork work;
    double floor_ms[NUM_CATEGORIES];
    const double floor = step_floors(step, cfg, rates, &work, floor_ms);
    const MeasuredRates at_limit = rates_at_power_limit(rates);
    double limit_floor_ms[NUM_CATEGORIES];
    const double limit_floor = step_floors(step, cfg, &at_limit, &work, limit_floor_ms);
    json_t *o = json_object();
    json_object_set_new(o, "floor_ms", number_or_null(floor));
    json_object_set_new(o, "floor_at_power_limit_ms", number_or_null(limit_floor));
    json_object_set_new(o, "time_over_floor_at_power_limit", number_or_null(time_over_floor(r->mean_ms, limit_floor)));
    json_object_set_new(o, "mfu", number_or_null(step_mfu(step, cfg, rates, r->mean_ms)));
    json_object_set_new(o, "time_over_floor", number_or_null(time_over_floor(r->mean_ms, floor)));
    json_object_set_new(o, "recorded_step_ms", r->has_breakdown ? json_real(r->breakdown_ms) : json_null());
    const int timed = r->has_breakdown && r->breakdown_timer;
    json_object_set_new(o, "timer", timed ? json_string(r->breakdown_timer) : json_null());
    json_t *cats = json_object();
    for (int c = 0; c < NUM_CATEGORIES; c++) {
        json_t *cat = json_object();
        json_object_set_new(cat, "name", json_string(category_name((Category)c)));
        json_object_set_new(cat, "ms", r->has_breakdown ? json_real(r->category_ms[c]) : json_null());
        json_object_set_new(cat, "floor_ms", number_or_null(floor_ms[c]));
        json_object_set_new(cat, "floor_at_power_limit_ms", number_or_null(limit_floor_ms[c]));
        json_object_set_new(cat, "flops", json_real(work.flops[c]));
        json_object_set_new(cat, "bytes", json_real(work.bytes[c]));
        json_object_set_new(cats, category_key((Category)c), cat);
    }
    json_object_set_new(o, "categories", cats);
    return o;
}

void fprint_json(FILE *f, json_t *value) {
    char *text = json_dumps(value, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    fputs(text ? text : "null", f);
    free(text);
    json_decref(value);
}
