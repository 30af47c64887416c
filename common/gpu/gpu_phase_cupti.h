// The CUPTI timer behind gpu_phase.h (internal: only gpu_phase.c calls this).
//
// While a step is recorded, CUPTI's activity API records every kernel, memcpy and memset with
// its start and end on the GPU, and - through external correlation - the phase each was
// launched in: gpu_phase.c pushes phase_external_id(c) when the outermost phase opens and pops
// it when it closes. The records arrive in buffers this file hands CUPTI (allocated once, in
// gpu_phase_cupti_init); common/core/breakdown.h's activities_attribute() turns them into
// per-category times.
//
// Needs libcupti (part of the CUDA toolkit; tools/gpu_pack.sh packs it beside the binaries)
// and a CUPTI that is free: not used by a profiler (Nsight Systems, Nsight Compute) and not
// refused by the driver (CUPTI_ERROR_INSUFFICIENT_PRIVILEGES, where GPU performance counters
// are restricted to administrators). gpu_phase_cupti_init says when it cannot work.
// Host threads: phases are pushed on the thread that launches (one, here).
#ifndef COMMON_GPU_GPU_PHASE_CUPTI_H
#define COMMON_GPU_GPU_PHASE_CUPTI_H

#include "common/core/breakdown.h"

#ifdef __cplusplus
extern "C" {
#endif

// Registers the buffers and records one trial kernel (the hold kernel, released at once) under
// a pushed id, to see the whole chain work: activity, external correlation, no drops. Returns
// NULL when CUPTI is ready, else why not ("CUPTI_ERROR_INSUFFICIENT_PRIVILEGES in
// cuptiActivityEnable: ..."), in a static string. Call once, with no step being recorded.
const char *gpu_phase_cupti_init(void);

// Waits for the GPU (no earlier work can be in the step), forgets earlier records, enables the
// activity kinds and queues the hold kernel (gpu_hold.h) under PHASE_EXTERNAL_ID_NOT_TIMED.
void gpu_phase_cupti_start_step(void);
// The outermost phase opens (category c) / closes, on this thread.
void gpu_phase_cupti_push(Category c);
void gpu_phase_cupti_pop(void);
// Waits for the GPU (call after gpu_hold_open), disables the kinds, flushes the records and
// attributes them: ms per category, returns the step's time (first start to last end). Dies
// with a message if CUPTI dropped a record or the records do not make a step.
double gpu_phase_cupti_finish_step(double ms[NUM_CATEGORIES]);

#ifdef __cplusplus
}
#endif

#endif  // COMMON_GPU_GPU_PHASE_CUPTI_H
