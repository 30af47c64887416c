// Where a training step's time goes: the categories, how a recorded step's timeline becomes
// per-category times, and each category's floor - its work at a rate measured on the GPU at
// hand.
//
// This file is plain C and does no timing. The timeline is recorded by common/gpu/gpu_phase.h
// (gpu_phase(CAT_GEMM_FPROP) before a GEMM, gpu_phase_end() after it), in one of two ways:
//   - CUPTI activity records (the default): every kernel, memcpy and memset of the step with
//     its start and end on the GPU, and the phase it was launched in. activities_attribute()
//     walks them in order of start.
//   - CUDA events at the phase boundaries (GPU_PHASE_TIMER=events): marks on the stream;
//     phase_marks_attribute() gives each interval between two marks to one category.
// The rates are measured by steps/driver/floors.c. What is here - the nesting rule, both
// attributions and the arithmetic of work and floors - is what CPU tests check
// (tests/common/breakdown_test.c, tests/breakdown/activity_walk_test.c).
//
// Why the sums are exact, both ways: each piece of the step's time, from its start to its end,
// goes to exactly one category (CAT_OTHER between phases, or where the GPU ran nothing), so the
// categories add up to the step's time; the only error is the rounding of the timestamps
// (CUDA events: about 0.5 us; CUPTI: integer ns, summed exactly).
#ifndef COMMON_CORE_BREAKDOWN_H
#define COMMON_CORE_BREAKDOWN_H

#include <stddef.h>
#include <stdint.h>

#include "common/core/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

// The categories of a training step, in the terms of Transformer Engine and PyTorch.
typedef enum {
    CAT_OTHER,        // between phases: launch gaps, and any launch nobody marked
    CAT_GEMM_FPROP,   // the Linears' forward products (Y = X W^T), epilogues included
    CAT_GEMM_DGRAD,   // their input gradients (dX = dY W)
    CAT_GEMM_WGRAD,   // their weight gradients (dW = dY^T X), bias gradients in the epilogue
    CAT_ATTN_FWD,     // attention forward: QK^T, softmax, dropout, PV (one kernel or several)
    CAT_ATTN_BWD,     // attention backward
    CAT_LAYERNORM,    // LayerNorm forward and backward (with what their kernels fuse)
    CAT_ELEMENTWISE,  // bias, GELU, dropout and residual adds done as passes of their own
    CAT_FP8_CAST,     // FP8 casts and transposes, and the delayed-scaling updates
    CAT_COMM,         // tensor-parallel collectives (step 07)
    NUM_CATEGORIES
} Category;

const char *category_name(Category c);  // "GEMM fprop": for tables and the chart
const char *category_key(Category c);   // "gemm_fprop": for JSON

// ---- marks: which calls open an interval, and what each interval is -------------------------
// Phases may nest (step 01's attention calls a dropout kernel whose launcher marks
// "elementwise"): only the outermost phase counts, so the attention's dropout stays attention.
// Both timers keep this rule through PhaseMarks: the events timer records a mark, and the CUPTI
// timer pushes (or pops) an external id, exactly where enter (leave) returns a mark.
typedef struct {
    int depth;           // phases open now
    int count;           // marks so far
    int capacity;
    Category *category;  // category[i]: what runs from mark i to mark i + 1
} PhaseMarks;

void phase_marks_init(PhaseMarks *m, int capacity);
void phase_marks_free(PhaseMarks *m);
// Forgets the marks and opens the step with mark 0 (CAT_OTHER). Returns 0: the index of the
// mark whose timestamp the caller records.
int phase_marks_start(PhaseMarks *m);
// Entering a phase of category c: the index of the new mark to record, or -1 when another
// phase is already open (nothing to record). Dies with a message past `capacity` marks.
int phase_marks_enter(PhaseMarks *m, Category c);
// Leaving a phase: the index of the new mark (back to CAT_OTHER) when the outermost phase
// closes, else -1. Dies if no phase is open.
int phase_marks_leave(PhaseMarks *m);
// Closes the step: the index of its last mark.
int phase_marks_finish(PhaseMarks *m);

// t_ms[i]: mark i's time in ms (any origin). Adds interval i (t_ms[i + 1] - t_ms[i]) to
// ms[category[i]] for every category, and sets *total_ms = t_ms[count - 1] - t_ms[0].
// Returns NULL, or what is wrong: fewer than two marks, a phase left open, or a time that
// goes backwards (events recorded on different streams).
const char *phase_marks_attribute(const PhaseMarks *m, const double *t_ms, double ms[NUM_CATEGORIES],
                                  double *total_ms);

// ---- activity records: per-kernel times, attributed by the phase that launched them ------
// CUPTI gives each kernel, memcpy and memset its start and end on the GPU and the correlation
// id of the API call that launched it; gpu_phase() pushes an external id (CUPTI's external
// correlation) while the outermost phase is open, and CUPTI links each API call made under it
// to that id. The external ids:
static inline uint64_t phase_external_id(Category c) { return (uint64_t)c + 1; }  // 1 .. NUM_CATEGORIES
// Work that is recorded but is not part of the step (the hold kernel the step is queued
// behind, common/gpu/gpu_hold.h): left out of the walk.
enum { PHASE_EXTERNAL_ID_NOT_TIMED = 1000 };

typedef struct {
    uint64_t start_ns, end_ns;  // on the GPU (CUPTI's clock); 0 means CUPTI could not time it
    uint32_t correlation_id;    // the API call that launched it
} TimedActivity;

typedef struct {
    uint32_t correlation_id;  // an API call ...
    uint64_t external_id;     // ... made under this id: phase_external_id(c) or ..._NOT_TIMED
} CorrelationLink;

// Attributes a recorded step. Each activity's category comes from the link of its correlation
// id (none: CAT_OTHER - a launch outside every phase). Activities are walked in order of start
// (then end, then correlation id); each gets the part of [start, end] after the end of all
// the time covered before it, so work overlapping on another stream (step 07's collectives) is
// counted once, by whichever started first; the time between activities where nothing ran
// goes to CAT_OTHER ("launch gaps"). The step runs from the first start to the last end:
// *total_ms, which ms[] sums to exactly in ns (up to the rounding of ns to double ms).
// Sorts both arrays in place. Returns NULL, or what is wrong: no activity in the step, a
// timestamp of 0 (CUPTI ran out of device memory for it), an end before its start, an external
// id that is neither a category's nor ..._NOT_TIMED, or one correlation id linked to two ids.
const char *activities_attribute(TimedActivity *activities, size_t count, CorrelationLink *links,
                                 size_t link_count, double ms[NUM_CATEGORIES], double *total_ms);

// ---- work and floors ---------------------------------------------------------------------
// Which layer a step computes, for the work each category must do.
typedef enum {
    LAYER_SERIAL,    // x + Attn(LN1(x)), then + MLP(LN2(.)): steps 01-05, 07
    LAYER_PARALLEL,  // x + Attn(LN(x)) + MLP(LN(x)), one LayerNorm: step 06
} LayerKind;

typedef struct {
    LayerKind kind;
    int fp8_gemms;  // the Linears' GEMMs run in FP8 (steps 05, 06f)
    int tp;         // tensor-parallel ranks sharing the layer (step 07); 1 otherwise
} LayerVariant;

// The work of one training step (forward + backward) per category, for one rank:
//   GEMM fprop, dgrad, wgrad: 2 T in out FLOPs for each Linear (in -> out), each pass.
//   attention forward: 4 b s^2 h FLOPs (QK^T and PV), halved when causal; backward 2.5x that
//     (five products: S is recomputed), as kernels/attention/attention_bench.c counts.
//   LayerNorm: bytes of each LayerNorm reading x and writing y (forward), reading dy, x and the
//     residual branch's gradient and writing dx (backward), and its float mean and rstd.
//   elementwise: bytes of the one pass that GEMM epilogues cannot absorb: residual +
//     dropout(z + bias) forward (read z and x, write y) and, with dropout, its backward (read
//     dy, write dz). GELU and the other residual add cost nothing here: they fit in GEMM
//     epilogues (step 03), so a step that runs them as passes shows that as time over floor.
//   FP8 casts: for each FP8 GEMM, its input, weight and output gradient read once in 16 bits
//     and written twice in FP8 (as is and transposed).
//   communication: bytes of the all-reduced messages (4 of [T, h] per step under tensor
//     parallelism: after the projection and FC2 forward, before LN1 and LN2 backward).
// T = seq * batch tokens, e = 2 bytes (fp16/bf16). flops[] is set for GEMM and attention,
// bytes[] for the rest; everything else is 0. GEMM and attention work is divided by tp.
typedef struct {
    double flops[NUM_CATEGORIES];
    double bytes[NUM_CATEGORIES];
} CategoryWork;

void layer_category_work(const LayerConfig *c, const LayerVariant *v, CategoryWork *w);

// Rates measured on the GPU at hand (steps/driver/floors.c says how); 0 means not measured.
typedef struct {
    double gemm_tflops;      // a large cuBLASLt GEMM in the layer's dtype, random operands
    double fp8_gemm_tflops;  // the same in FP8 (E4M3 x E4M3)
    double attn_fwd_tflops;  // our attention alone at the layer's shape, FLOPs counted as above
    double attn_bwd_tflops;
    double copy_gbps;        // cudaMemcpy device to device: bytes read + written per second / 1e9
    double allreduce_gbps;   // all-reduce: message bytes per second / 1e9 (step 07)
    // The compute rates again, at the power limit: each product run back to back until the GPU
    // has lowered its clocks to keep its board under the power limit, then timed (floors.c says
    // how long). A training step of the large layer runs there (the H200: 700 W, about 1.5 GHz
    // instead of 1.98). 0: not measured (only --breakdown measures them).
    double limit_gemm_tflops, limit_fp8_gemm_tflops, limit_attn_fwd_tflops, limit_attn_bwd_tflops;
} MeasuredRates;

// The rates of a step that holds the GPU at its power limit: *r with the compute rates replaced
// by their limit_ twins (0 where those were not measured, so those floors become unknown). The
// bandwidth rates stay as measured in a burst (a copy's speed is set by the memory, which the
// lower SM clock at the limit hardly slows; not measured held). category_floors over these
// gives the floors at the power limit.
MeasuredRates rates_at_power_limit(const MeasuredRates *r);

// floor_ms[c]: the category's work at its rate - FLOPs at the GEMM rate (the FP8 rate when
// v->fp8_gemms) or at the attention rates, bytes at the copy or all-reduce bandwidth. 0 for no
// work (and for CAT_OTHER, whose floor is 0); NAN where there is work but its rate is 0.
void category_floors(const CategoryWork *w, const LayerVariant *v, const MeasuredRates *r,
                     double floor_ms[NUM_CATEGORIES]);
// The step's floor: the sum of the categories' floors (NAN if any is NAN).
double floor_total_ms(const double floor_ms[NUM_CATEGORIES]);

// Model FLOPs utilisation: model_flops / time, as a fraction of the measured GEMM rate
// (model_flops: layer_train_flops; gemm_tflops: the rate of the step's GEMM precision).
// NAN when a rate or time is not positive.
double model_flops_utilisation(double model_flops, double step_ms, double gemm_tflops);
// step_ms / floor_ms (1.0 = at the floor); NAN when the floor is unknown or not positive.
double time_over_floor(double step_ms, double floor_ms);

#ifdef __cplusplus
}
#endif

#endif  // COMMON_CORE_BREAKDOWN_H
