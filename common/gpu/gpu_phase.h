// Recording where a training step's time goes, by category, at the GPU's real clocks.
//
// A launch site says which category its work belongs to:
//
//     GPU_PHASE(CAT_GEMM_FPROP, gemm_run(&g));          // one call
//     gpu_phase(CAT_LAYERNORM); ...launches...; gpu_phase_end();   // several
//
// While a step is being recorded (gpu_phase_start_step ... gpu_phase_finish_step), the GPU's
// timeline of the step is taken, and each piece of it goes to one category: the phase the
// running work was launched in, or "other / launch gaps" where the GPU ran none of the step's
// work or ran a kernel launched outside every phase (common/core/breakdown.h has the rules and
// why the sums are exact). Otherwise gpu_phase() is one test of a global flag: a training step
// that is not recorded pays nothing measurable.
//
// Two timers; GPU_PHASE_TIMER=cupti (the default) or events picks one:
//   cupti   CUPTI's activity records: every kernel, memcpy and memset of the step, with its
//           start and end on the GPU, and - through CUPTI's external correlation - the phase
//           it was launched in (the outermost gpu_phase() pushes an id, its gpu_phase_end()
//           pops it). No command goes into the stream between kernels (CUPTI times them
//           itself); the driver still prints how the recorded step compares with the timed
//           ones' mean. Needs libcupti, which ships with the CUDA toolkit (tools/gpu_pack.sh
//           packs it beside the binaries), and no profiler: where CUPTI cannot work - Nsight
//           Systems or Compute attached, or CUPTI_ERROR_INSUFFICIENT_PRIVILEGES where the driver
//           keeps GPU counters to administrators - gpu_phase_prepare says so in one line and
//           falls back to events.
//   events  a CUDA event on the default stream at every outermost phase boundary; every
//           interval between two events is one category's. Needs nothing but the CUDA runtime.
// Why CUPTI is the default: each event is a command in the stream between two kernels and
// costs GPU time. On an H200 (`gpu_run.sh breakdown`, fp16) the recorded step summed to 100.3,
// 100.2, 104.8, 101.6, 105.9, 102.4, 102.8 and 103.0% of the timed steps' mean for steps
// 01..06f: steps 03 and 05, with many small kernels, came out over 3% slow; at
// breakdown_gpu_test's smaller shape step 05 took 2.195 ms recorded against a 2.062 ms mean. Either
// way the categories are call sites, not kernel names: cuBLASLt runs the same kernel for a
// forward and a weight-gradient GEMM, and only the caller knows which it was.
//
// Streams: our kernels and cuBLAS calls run on the default (legacy) stream. Work on other
// streams (step 07's NCCL, step 04's wgrad stream) is timed where it runs by CUPTI - time two streams overlap is
// counted once - and by events only where the default stream waits for it. Host threads: one
// (the phase pushed on one thread does not mark launches from another).
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

// Picks the timer (GPU_PHASE_TIMER; an unknown value: message and exit 1) and readies it, once,
// outside any timed step: the events timer creates its events, the CUPTI timer hands CUPTI its
// buffers and records one trial kernel (so CUPTI's start-up falls outside the step), or falls
// back to events with a one-line note. gpu_phase_start_step calls it too.
void gpu_phase_prepare(void);
// Starts recording. Call between steps, with the GPU idle or busy: events queue the step's
// first event behind earlier work; CUPTI waits for it (none of it may be in the records).
// Both queue the step behind the hold kernel (gpu_hold.h), which the timing leaves out.
void gpu_phase_start_step(void);
// Waits for the GPU and writes each category's time in ms to ms[]; returns the step's time -
// events: first event to last; CUPTI: the first activity's start to the last one's end - which
// is the sum of ms[] up to rounding. Stops recording. Dies with a message if a phase was left
// open or the timeline cannot be read (CUPTI dropped records: never silently).
double gpu_phase_finish_step(double ms[NUM_CATEGORIES]);

typedef enum { GPU_PHASE_TIMER_EVENTS, GPU_PHASE_TIMER_CUPTI } GpuPhaseTimer;
// The timer in use: after gpu_phase_prepare, the one it readied (events after a fallback);
// before, the one GPU_PHASE_TIMER asks for.
GpuPhaseTimer gpu_phase_timer(void);
const char *gpu_phase_timer_key(GpuPhaseTimer t);    // "cupti", "events": GPU_PHASE_TIMER's values, JSON
const char *gpu_phase_timer_words(GpuPhaseTimer t);  // "CUPTI activity records of every kernel": tables

#ifdef __cplusplus
}
#endif

#endif  // COMMON_GPU_GPU_PHASE_H
