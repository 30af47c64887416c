// Where a training step's time goes: the categories, how marks on the GPU's timeline become
// per-category times, and each category's floor - its work at a rate measured on the GPU at
// hand.
//
// This file is plain C and does no timing. The marks are recorded as CUDA events by
// common/gpu/gpu_phase.h (gpu_phase(CAT_GEMM_FPROP) before a GEMM, gpu_phase_end() after
// it); the rates are measured by steps/driver/floors.c. What is here - the nesting rule, the
// attribution of intervals and the arithmetic of work and floors - is what a CPU test checks
// (tests/common/breakdown_test.c).
//
// Why the sums are exact: every mark starts an interval that lasts until the next mark, and
// each interval belongs to exactly one category (CAT_OTHER between phases). The intervals tile
// the step from its first mark to its last, so the categories add up to the step's time; the
// only error is the float rounding of the timestamps (CUDA events: about 0.5 us).
#ifndef COMMON_CORE_BREAKDOWN_H
#define COMMON_CORE_BREAKDOWN_H

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
} MeasuredRates;

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
