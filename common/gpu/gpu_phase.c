#include "common/gpu/gpu_phase.h"

#include <stdio.h>
#include <stdlib.h>

#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu_hold.h"

// A step of step 01 marks about 80 boundaries; the events are created once, before the first
// recorded step, so that no cudaEventCreate runs while the step is being timed.
enum { MAX_MARKS = 4096 };

int gpu_phase_recording;
static PhaseMarks marks;
static cudaEvent_t *events;

static void record(int mark) {
    if (mark >= 0) CUDA_CHECK(cudaEventRecord(events[mark], 0));
}

void gpu_phase_record_enter(Category c) { record(phase_marks_enter(&marks, c)); }

void gpu_phase_record_leave(void) { record(phase_marks_leave(&marks)); }

void gpu_phase_prepare(void) {
    if (events) return;
    phase_marks_init(&marks, MAX_MARKS);
    events = xmalloc(sizeof(cudaEvent_t) * MAX_MARKS);
    for (int i = 0; i < MAX_MARKS; i++) CUDA_CHECK(cudaEventCreate(&events[i]));
}

void gpu_phase_start_step(void) {
    gpu_phase_prepare();
    gpu_hold_close(2000.0);  // the step is queued whole before it runs (gpu_hold.h says why)
    record(phase_marks_start(&marks));
    gpu_phase_recording = 1;
}

double gpu_phase_finish_step(double ms[NUM_CATEGORIES]) {
    record(phase_marks_finish(&marks));
    gpu_phase_recording = 0;
    if (gpu_hold_open())
        fprintf(stderr, "note: the hold gave up (2 s) before the breakdown's step was queued: that step "
                        "may include launch gaps\n");
    CUDA_CHECK(cudaEventSynchronize(events[marks.count - 1]));
    CHECK_LAUNCH();
    // Every time from the first event, so that the intervals telescope: their sum is exactly
    // the last time, whatever the rounding of each.
    double *t_ms = xmalloc(sizeof(double) * (size_t)marks.count);
    for (int i = 0; i < marks.count; i++) {
        float t;
        CUDA_CHECK(cudaEventElapsedTime(&t, events[0], events[i]));
        t_ms[i] = t;
    }
    double total;
    const char *problem = phase_marks_attribute(&marks, t_ms, ms, &total);
    free(t_ms);
    if (problem) DIE("time breakdown: %s", problem);
    return total;
}
