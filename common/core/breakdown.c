#include "common/core/breakdown.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/errors.h"

static const char *const NAMES[NUM_CATEGORIES] = {
    [CAT_OTHER] = "other / launch gaps",
    [CAT_GEMM_FPROP] = "GEMM fprop",
    [CAT_GEMM_DGRAD] = "GEMM dgrad",
    [CAT_GEMM_WGRAD] = "GEMM wgrad",
    [CAT_ATTN_FWD] = "attention fwd",
    [CAT_ATTN_BWD] = "attention bwd",
    [CAT_LAYERNORM] = "LayerNorm",
    [CAT_ELEMENTWISE] = "elementwise + dropout",
    [CAT_FP8_CAST] = "FP8 casts + transposes",
    [CAT_COMM] = "communication",
};

static const char *const KEYS[NUM_CATEGORIES] = {
    [CAT_OTHER] = "other",
    [CAT_GEMM_FPROP] = "gemm_fprop",
    [CAT_GEMM_DGRAD] = "gemm_dgrad",
    [CAT_GEMM_WGRAD] = "gemm_wgrad",
    [CAT_ATTN_FWD] = "attention_fwd",
    [CAT_ATTN_BWD] = "attention_bwd",
    [CAT_LAYERNORM] = "layernorm",
    [CAT_ELEMENTWISE] = "elementwise",
    [CAT_FP8_CAST] = "fp8_cast",
    [CAT_COMM] = "communication",
};

const char *category_name(Category c) { return c >= 0 && c < NUM_CATEGORIES ? NAMES[c] : "?"; }
const char *category_key(Category c) { return c >= 0 && c < NUM_CATEGORIES ? KEYS[c] : "?"; }

// ---- marks -------------------------------------------------------------------------------
void phase_marks_init(PhaseMarks *m, int capacity) {
    memset(m, 0, sizeof *m);
    m->capacity = capacity;
    m->category = xcalloc((size_t)capacity, sizeof *m->category);
}

void phase_marks_free(PhaseMarks *m) {
    free(m->category);
    memset(m, 0, sizeof *m);
}

static int add_mark(PhaseMarks *m, Category c) {
    if (m->count == m->capacity)
        DIE("more than %d phase boundaries in one step: raise the capacity given to phase_marks_init",
            m->capacity);
    m->category[m->count] = c;
    return m->count++;
}

int phase_marks_start(PhaseMarks *m) {
    m->depth = 0;
    m->count = 0;
    return add_mark(m, CAT_OTHER);
}

int phase_marks_enter(PhaseMarks *m, Category c) {
    if (m->depth++ > 0) return -1;  // inside another phase: it keeps the time
    return add_mark(m, c);
}

int phase_marks_leave(PhaseMarks *m) {
    if (m->depth == 0) DIE("gpu_phase_end() without a gpu_phase() before it");
    if (--m->depth > 0) return -1;
    return add_mark(m, CAT_OTHER);
}

int phase_marks_finish(PhaseMarks *m) { return add_mark(m, CAT_OTHER); }

const char *phase_marks_attribute(const PhaseMarks *m, const double *t_ms, double ms[NUM_CATEGORIES],
                                  double *total_ms) {
    for (int c = 0; c < NUM_CATEGORIES; c++) ms[c] = 0.0;
    *total_ms = 0.0;
    if (m->count < 2) return "fewer than two marks: nothing was timed";
    if (m->depth != 0) return "a phase was left open (a gpu_phase() without its gpu_phase_end())";
    for (int i = 0; i + 1 < m->count; i++) {
        double dt = t_ms[i + 1] - t_ms[i];
        if (dt < 0) return "a mark's time is before the previous one's (were they recorded on one stream?)";
        ms[m->category[i]] += dt;
    }
    *total_ms = t_ms[m->count - 1] - t_ms[0];
    return NULL;
}

// ---- activity records ----------------------------------------------------------------------
static int by_start(const void *a, const void *b) {
    const TimedActivity *x = a, *y = b;
    if (x->start_ns != y->start_ns) return x->start_ns < y->start_ns ? -1 : 1;
    if (x->end_ns != y->end_ns) return x->end_ns < y->end_ns ? -1 : 1;
    return (x->correlation_id > y->correlation_id) - (x->correlation_id < y->correlation_id);
}

static int by_correlation(const void *a, const void *b) {
    const CorrelationLink *x = a, *y = b;
    return (x->correlation_id > y->correlation_id) - (x->correlation_id < y->correlation_id);
}

// The external id the API call `correlation_id` was made under, or 0 for none (links sorted).
static uint64_t linked_id(const CorrelationLink *links, size_t count, uint32_t correlation_id) {
    const CorrelationLink key = {.correlation_id = correlation_id};
    const CorrelationLink *hit = bsearch(&key, links, count, sizeof *links, by_correlation);
    return hit ? hit->external_id : 0;
}

static int known_external_id(uint64_t id) {
    return id == PHASE_EXTERNAL_ID_NOT_TIMED || (id >= 1 && id <= NUM_CATEGORIES);
}

const char *activities_attribute(TimedActivity *activities, size_t count, CorrelationLink *links,
                                 size_t link_count, double ms[NUM_CATEGORIES], double *total_ms) {
    for (int c = 0; c < NUM_CATEGORIES; c++) ms[c] = 0.0;
    *total_ms = 0.0;
    qsort(links, link_count, sizeof *links, by_correlation);
    for (size_t i = 0; i < link_count; i++) {
        if (!known_external_id(links[i].external_id))
            return "an external correlation id that is no category's (was it pushed by gpu_phase?)";
        if (i > 0 && links[i].correlation_id == links[i - 1].correlation_id &&
            links[i].external_id != links[i - 1].external_id)
            return "one API call linked to two phases (were phases pushed from two threads?)";
    }
    qsort(activities, count, sizeof *activities, by_start);
    // Integer ns per category: the walk adds up exactly to last end - first start.
    uint64_t ns[NUM_CATEGORIES] = {0};
    uint64_t first_start = 0, covered_until = 0;  // the end of all the time walked so far
    int started = 0;
    for (size_t i = 0; i < count; i++) {
        const TimedActivity *a = &activities[i];
        if (a->start_ns == 0 || a->end_ns == 0)
            return "an activity without a timestamp (CUPTI had no device memory left to time it)";
        if (a->end_ns < a->start_ns) return "an activity that ends before it starts";
        const uint64_t id = linked_id(links, link_count, a->correlation_id);
        if (id == PHASE_EXTERNAL_ID_NOT_TIMED) continue;
        const Category c = id ? (Category)(id - 1) : CAT_OTHER;
        if (!started) {
            first_start = covered_until = a->start_ns;
            started = 1;
        }
        if (a->start_ns > covered_until) {  // the GPU ran none of the step's work in between
            ns[CAT_OTHER] += a->start_ns - covered_until;
            covered_until = a->start_ns;
        }
        if (a->end_ns > covered_until) {  // only what no earlier activity covered
            ns[c] += a->end_ns - covered_until;
            covered_until = a->end_ns;
        }
    }
    if (!started) return "no kernel, memcpy or memset was recorded in the step";
    for (int c = 0; c < NUM_CATEGORIES; c++) ms[c] = (double)ns[c] * 1e-6;
    *total_ms = (double)(covered_until - first_start) * 1e-6;
    return NULL;
}

// ---- work ----------------------------------------------------------------------------------
typedef struct {
    double in, out;
} LinearShape;

// The layer's GEMMs as Linears (in -> out). The parallel layer's are step 06's two fused ones:
// the same FLOPs as its four separate Linears, and the operands an FP8 version casts.
static int layer_linears(const LayerConfig *c, LayerKind kind, LinearShape out[4]) {
    const double h = c->hidden, f = c->ffn;
    if (kind == LAYER_PARALLEL) {
        out[0] = (LinearShape){h, 3 * h + f};  // [W_qkv ; W_fc1]
        out[1] = (LinearShape){h + f, h};      // [W_proj | W_fc2]
        return 2;
    }
    out[0] = (LinearShape){h, 3 * h};  // qkv
    out[1] = (LinearShape){h, h};      // proj
    out[2] = (LinearShape){h, f};      // fc1
    out[3] = (LinearShape){f, h};      // fc2
    return 4;
}

void layer_category_work(const LayerConfig *c, const LayerVariant *v, CategoryWork *w) {
    memset(w, 0, sizeof *w);
    const double t = (double)layer_tokens(c), h = c->hidden, e = 2.0;  // e: bytes of fp16/bf16
    const double tp = v->tp > 1 ? v->tp : 1;
    LinearShape lin[4];
    const int n = layer_linears(c, v->kind, lin);
    for (int i = 0; i < n; i++) {
        const double gemm = 2.0 * t * lin[i].in * lin[i].out / tp;
        w->flops[CAT_GEMM_FPROP] += gemm;
        w->flops[CAT_GEMM_DGRAD] += gemm;
        w->flops[CAT_GEMM_WGRAD] += gemm;
        if (v->fp8_gemms)  // x, W and dy: read in 16 bits, written in FP8 as is and transposed
            w->bytes[CAT_FP8_CAST] += (t * lin[i].in + lin[i].in * lin[i].out + t * lin[i].out) * (e + 2.0);
    }
    double attn_fwd = 4.0 * c->batch * (double)c->seq * c->seq * h / tp;
    if (c->causal) attn_fwd *= 0.5;
    w->flops[CAT_ATTN_FWD] = attn_fwd;
    w->flops[CAT_ATTN_BWD] = 2.5 * attn_fwd;

    const int layernorms = v->kind == LAYER_PARALLEL ? 1 : 2;
    const double ln_forward = 2.0 * t * h * e + 8.0 * t;   // x in, y out; mean and rstd out
    const double ln_backward = 4.0 * t * h * e + 8.0 * t; // dy, x, dresidual in, dx out; mean, rstd in
    w->bytes[CAT_LAYERNORM] = layernorms * (ln_forward + ln_backward);

    w->bytes[CAT_ELEMENTWISE] = 3.0 * t * h * e;                      // y = x + dropout(z + bias)
    if (c->hidden_dropout > 0) w->bytes[CAT_ELEMENTWISE] += 2.0 * t * h * e;  // dz = dropout'(dy)

    if (v->tp > 1) w->bytes[CAT_COMM] = 4.0 * t * h * e;
}

// ---- floors --------------------------------------------------------------------------------
static double at_rate_ms(double work, double per_second) {
    if (work <= 0) return 0.0;
    if (per_second <= 0) return NAN;
    return work / per_second * 1e3;
}

void category_floors(const CategoryWork *w, const LayerVariant *v, const MeasuredRates *r,
                     double floor_ms[NUM_CATEGORIES]) {
    const double gemm = (v->fp8_gemms ? r->fp8_gemm_tflops : r->gemm_tflops) * 1e12;
    floor_ms[CAT_OTHER] = 0.0;
    floor_ms[CAT_GEMM_FPROP] = at_rate_ms(w->flops[CAT_GEMM_FPROP], gemm);
    floor_ms[CAT_GEMM_DGRAD] = at_rate_ms(w->flops[CAT_GEMM_DGRAD], gemm);
    floor_ms[CAT_GEMM_WGRAD] = at_rate_ms(w->flops[CAT_GEMM_WGRAD], gemm);
    floor_ms[CAT_ATTN_FWD] = at_rate_ms(w->flops[CAT_ATTN_FWD], r->attn_fwd_tflops * 1e12);
    floor_ms[CAT_ATTN_BWD] = at_rate_ms(w->flops[CAT_ATTN_BWD], r->attn_bwd_tflops * 1e12);
    floor_ms[CAT_LAYERNORM] = at_rate_ms(w->bytes[CAT_LAYERNORM], r->copy_gbps * 1e9);
    floor_ms[CAT_ELEMENTWISE] = at_rate_ms(w->bytes[CAT_ELEMENTWISE], r->copy_gbps * 1e9);
    floor_ms[CAT_FP8_CAST] = at_rate_ms(w->bytes[CAT_FP8_CAST], r->copy_gbps * 1e9);
    floor_ms[CAT_COMM] = at_rate_ms(w->bytes[CAT_COMM], r->allreduce_gbps * 1e9);
}

MeasuredRates rates_at_power_limit(const MeasuredRates *r) {
    MeasuredRates at_limit = *r;
    at_limit.gemm_tflops = r->limit_gemm_tflops;
    at_limit.fp8_gemm_tflops = r->limit_fp8_gemm_tflops;
    at_limit.attn_fwd_tflops = r->limit_attn_fwd_tflops;
    at_limit.attn_bwd_tflops = r->limit_attn_bwd_tflops;
    return at_limit;
}

double floor_total_ms(const double floor_ms[NUM_CATEGORIES]) {
    double sum = 0.0;
    for (int c = 0; c < NUM_CATEGORIES; c++) sum += floor_ms[c];  // a NAN makes the sum NAN
    return sum;
}

double model_flops_utilisation(double model_flops, double step_ms, double gemm_tflops) {
    if (!(step_ms > 0) || !(gemm_tflops > 0)) return NAN;
    return model_flops / (step_ms * 1e-3) / (gemm_tflops * 1e12);
}

double time_over_floor(double step_ms, double floor_ms) {
    if (!(floor_ms > 0) || isnan(step_ms)) return NAN;
    return step_ms / floor_ms;
}
