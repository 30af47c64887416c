#include "common/gpu/gpu_phase.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu_hold.h"
#include "common/gpu/gpu_phase_cupti.h"

// A step of step 01 marks about 80 boundaries; the events are created once, before the first
// recorded step, so that no cudaEventCreate runs while the step is being timed.
enum { MAX_MARKS = 4096 };

int gpu_phase_recording;
static PhaseMarks marks;  // the nesting rule, for both timers
static int prepared;
static GpuPhaseTimer timer;
static cudaEvent_t *events;  // the events timer's

// ---- which timer ---------------------------------------------------------------------------
static GpuPhaseTimer timer_asked(void) {
    const char *v = getenv("GPU_PHASE_TIMER");
    if (!v || !*v || strcmp(v, "cupti") == 0) return GPU_PHASE_TIMER_CUPTI;
    if (strcmp(v, "events") == 0) return GPU_PHASE_TIMER_EVENTS;
    fail_user("GPU_PHASE_TIMER=%s: expected cupti (CUPTI's activity records, the default) or events (CUDA "
              "events between phases)", v);
}

GpuPhaseTimer gpu_phase_timer(void) { return prepared ? timer : timer_asked(); }

const char *gpu_phase_timer_key(GpuPhaseTimer t) { return t == GPU_PHASE_TIMER_CUPTI ? "cupti" : "events"; }

const char *gpu_phase_timer_words(GpuPhaseTimer t) {
    return t == GPU_PHASE_TIMER_CUPTI ? "CUPTI activity records of every kernel" : "CUDA events between phases";
}

// ---- the events timer ----------------------------------------------------------------------
static void record_event(int mark) { CUDA_CHECK(cudaEventRecord(events[mark], 0)); }

static void create_events(void) {
    events = xmalloc(sizeof(cudaEvent_t) * MAX_MARKS);
    for (int i = 0; i < MAX_MARKS; i++) CUDA_CHECK(cudaEventCreate(&events[i]));
}

// Every time from the first event, so that the intervals telescope: their sum is exactly the
// last time, whatever the rounding of each.
static double attribute_events(double ms[NUM_CATEGORIES]) {
    CUDA_CHECK(cudaEventSynchronize(events[marks.count - 1]));
    CHECK_LAUNCH();
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

// ---- both ----------------------------------------------------------------------------------
void gpu_phase_record_enter(Category c) {
    const int mark = phase_marks_enter(&marks, c);
    if (mark < 0) return;  // inside another phase: it keeps the time
    if (timer == GPU_PHASE_TIMER_CUPTI) gpu_phase_cupti_push(c);
    else record_event(mark);
}

void gpu_phase_record_leave(void) {
    const int mark = phase_marks_leave(&marks);
    if (mark < 0) return;
    if (timer == GPU_PHASE_TIMER_CUPTI) gpu_phase_cupti_pop();
    else record_event(mark);
}

void gpu_phase_prepare(void) {
    if (prepared) return;
    prepared = 1;
    phase_marks_init(&marks, MAX_MARKS);
    timer = timer_asked();
    if (timer == GPU_PHASE_TIMER_CUPTI) {
        const char *why = gpu_phase_cupti_init();
        if (why) {
            fprintf(stderr, "note: %s: the breakdown falls back to CUDA events between phases "
                            "(GPU_PHASE_TIMER=events)\n", why);
            timer = GPU_PHASE_TIMER_EVENTS;
        }
    }
    if (timer == GPU_PHASE_TIMER_EVENTS) create_events();
}

void gpu_phase_start_step(void) {
    gpu_phase_prepare();
    const int first = phase_marks_start(&marks);
    if (timer == GPU_PHASE_TIMER_CUPTI) {
        gpu_phase_cupti_start_step();  // queues the hold too, under an id the walk leaves out
    } else {
        gpu_hold_close(2000.0);  // the step is queued whole before it runs (gpu_hold.h says why)
        record_event(first);
    }
    gpu_phase_recording = 1;
}

double gpu_phase_finish_step(double ms[NUM_CATEGORIES]) {
    const int last = phase_marks_finish(&marks);
    if (timer == GPU_PHASE_TIMER_EVENTS) record_event(last);
    gpu_phase_recording = 0;
    if (gpu_hold_open())
        fprintf(stderr, "note: the hold gave up (2 s) before the breakdown's step was queued: that step "
                        "may include launch gaps\n");
    if (timer == GPU_PHASE_TIMER_EVENTS) return attribute_events(ms);
    if (marks.depth != 0) DIE("time breakdown: a phase was left open (a gpu_phase() without its gpu_phase_end())");
    return gpu_phase_cupti_finish_step(ms);
}
