// Recording where a training step's time goes, by category, at the GPU's real clocks.
//
// A launch site says which category its work belongs to:
//
//     GPU_PHASE(CAT_GEMM_FPROP, gemm_run(&g));          // one call
//     gpu_phase(CAT_LAYERNORM); ...launches...; gpu_phase_end();   // several
//
// While a step is being recorded (gpu_phase_start_step ... gpu_phase_finish_step), each
// outermost gpu_phase() and gpu_phase_end() records a CUDA event on the default stream, and
// every interval between two events goes to one category: the phase's, or "other / launch
// gaps" between phases (common/core/breakdown.h has the rule and why the sums are exact).
// Otherwise gpu_phase() is one test of a global flag: a training step that is not recorded
// pays nothing measurable.
//
// Why CUDA events and not CUPTI's activity records (which give every kernel's start and end):
// events need nothing but the CUDA runtime - no libcupti on the GPU machine, no profiler -
// and they bracket module calls, which is what the categories are: cuBLASLt runs the same
// kernel for a forward and a weight-gradient GEMM, so a kernel's name cannot say which it
// was, while the call site knows. An event is a small command in the stream between two
// kernels; whether the recorded step is slower than the others is what the driver prints
// (the recorded step against the timed steps' mean).
//
// All our kernels and cuBLAS calls run on the default (legacy) stream, so one stream's events
// order them. Work on other streams (step 07's NCCL) is seen only where the default stream
// waits for it. Host threads: one.
#ifndef COMMON_GPU_GPU_PHASE_H
#define COMMON_GPU_GPU_PHASE_H

#include "common/core/breakdown.h"

#ifdef __cplusplus
extern "C" {
#endif

extern int gpu_phase_recording;  // 1 between gpu_phase_start_step and gpu_phase_finish_step

void gpu_phase_record_enter(Category c);
void gpu_phase_record_leave(void);

// The work launched from here to gpu_phase_end() belongs to category c (unless an enclosing
// phase is open: then it keeps the time).
static inline void gpu_phase(Category c) {
    if (gpu_phase_recording) gpu_phase_record_enter(c);
}
static inline void gpu_phase_end(void) {
    if (gpu_phase_recording) gpu_phase_record_leave();
}

// Runs the statement (a call, commas allowed) as a phase of `category`.
#define GPU_PHASE(category, ...) \
    do {                         \
        gpu_phase(category);     \
        __VA_ARGS__;             \
        gpu_phase_end();         \
    } while (0)

// Creates the events (a few ms, once), so that no cudaEventCreate runs while a step is being
// recorded. gpu_phase_start_step calls it too.
void gpu_phase_prepare(void);
// Starts recording: records the step's first event. Call between steps, with the GPU idle
// or busy (the first event is queued behind earlier work).
void gpu_phase_start_step(void);
// Records the last event, waits for the GPU, and writes each category's time in ms to ms[];
// returns the step's time (first event to last), which is the sum of ms[] up to rounding.
// Stops recording. Dies with a message if a phase was left open.
double gpu_phase_finish_step(double ms[NUM_CATEGORIES]);

#ifdef __cplusplus
}
#endif

#endif  // COMMON_GPU_GPU_PHASE_H
