#include "common/gpu/gpu_phase_cupti.h"

#include <cupti.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu_hold.h"

// ---- errors --------------------------------------------------------------------------------
// "CUPTI_ERROR_INSUFFICIENT_PRIVILEGES: <CUPTI's sentence>".
static const char *cupti_words(CUptiResult st) {
    static char words[400];
    const char *name = NULL, *message = NULL;
    if (cuptiGetResultString(st, &name) != CUPTI_SUCCESS || !name) name = "an unknown CUPTI error";
    if (cuptiGetErrorMessage(st, &message) != CUPTI_SUCCESS || !message) message = "";
    snprintf(words, sizeof words, "%s%s%s", name, *message ? ": " : "", message);
    return words;
}

#define CUPTI_CHECK(call)                                                                          \
    do {                                                                                           \
        CUptiResult st_ = (call);                                                                  \
        if (st_ != CUPTI_SUCCESS)                                                                  \
            die_at(__FILE__, __LINE__, "CUPTI error %s, in %s (GPU_PHASE_TIMER=events times the "   \
                   "breakdown without CUPTI)", cupti_words(st_), #call);                            \
    } while (0)

// ---- buffers and records -------------------------------------------------------------------
// A training step here launches a few hundred kernels; each costs CUPTI about 0.5 KB of
// records (the kernel's, the runtime and driver calls' and their external correlations). Four
// buffers of 8 MiB, allocated once, hold a step of over 50 000 launches, and are handed out
// again once CUPTI returns them. Should CUPTI hold on to more at once, more are allocated (a
// rare host-side malloc while the step is queued, not timed), up to MAX_BUFFERS; past that a
// request is refused, CUPTI drops records and the breakdown dies saying so.
enum { BUFFER_BYTES = 8 << 20, FIRST_BUFFERS = 4, MAX_BUFFERS = 64 };

static struct {
    pthread_mutex_t lock;  // CUPTI may return a full buffer from a thread of its own
    uint8_t *buffer[MAX_BUFFERS];
    int buffers;             // allocated so far
    int lent[MAX_BUFFERS];   // held by CUPTI now
    TimedActivity *activities;
    size_t count, capacity;
    CorrelationLink *links;
    size_t link_count, link_capacity;
    size_t dropped;            // records CUPTI says it dropped (no buffer space)
    size_t refused_buffers;    // buffer requests we could not serve (then CUPTI drops records)
    size_t unreadable;         // buffers with a record CUPTI could not read
} rec = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void CUPTIAPI buffer_requested(uint8_t **buffer, size_t *size, size_t *max_records) {
    pthread_mutex_lock(&rec.lock);
    *buffer = NULL;
    *size = 0;
    *max_records = 0;  // as many as fit
    int free_one = -1;
    for (int i = 0; i < rec.buffers && free_one < 0; i++)
        if (!rec.lent[i]) free_one = i;
    if (free_one < 0 && rec.buffers < MAX_BUFFERS) {
        rec.buffer[rec.buffers] = malloc(BUFFER_BYTES);  // 16-byte aligned; CUPTI needs 8
        if (rec.buffer[rec.buffers]) free_one = rec.buffers++;
    }
    if (free_one >= 0) {
        rec.lent[free_one] = 1;
        *buffer = rec.buffer[free_one];
        *size = BUFFER_BYTES;
    } else {
        rec.refused_buffers++;
    }
    pthread_mutex_unlock(&rec.lock);
}

static void grow(void **array, size_t *capacity, size_t element) {
    *capacity *= 2;
    void *bigger = realloc(*array, *capacity * element);
    if (!bigger) DIE("out of host memory for CUPTI's records (%zu of %zu bytes)", *capacity, element);
    *array = bigger;
}

static void keep_activity(uint64_t start, uint64_t end, uint32_t correlation_id) {
    if (rec.count == rec.capacity) grow((void **)&rec.activities, &rec.capacity, sizeof *rec.activities);
    rec.activities[rec.count++] = (TimedActivity){start, end, correlation_id};
}

// The records the walk needs; the API calls' own records (enabled only because CUPTI writes
// external correlations for API records alone) are skipped.
static void keep(const CUpti_Activity *r) {
    switch (r->kind) {
        case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL: {
            const CUpti_ActivityKernel10 *k = (const CUpti_ActivityKernel10 *)r;
            keep_activity(k->start, k->end, k->correlationId);
            break;
        }
        case CUPTI_ACTIVITY_KIND_MEMCPY: {
            const CUpti_ActivityMemcpy6 *m = (const CUpti_ActivityMemcpy6 *)r;
            keep_activity(m->start, m->end, m->correlationId);
            break;
        }
        case CUPTI_ACTIVITY_KIND_MEMSET: {
            const CUpti_ActivityMemset4 *m = (const CUpti_ActivityMemset4 *)r;
            keep_activity(m->start, m->end, m->correlationId);
            break;
        }
        case CUPTI_ACTIVITY_KIND_EXTERNAL_CORRELATION: {
            const CUpti_ActivityExternalCorrelation *e = (const CUpti_ActivityExternalCorrelation *)r;
            if (e->externalKind != CUPTI_EXTERNAL_CORRELATION_KIND_CUSTOM0) break;
            if (rec.link_count == rec.link_capacity) grow((void **)&rec.links, &rec.link_capacity, sizeof *rec.links);
            rec.links[rec.link_count++] = (CorrelationLink){e->correlationId, e->externalId};
            break;
        }
        default:
            break;
    }
}

static void CUPTIAPI buffer_completed(CUcontext context, uint32_t stream_id, uint8_t *buffer, size_t size,
                                      size_t valid_bytes) {
    (void)context, (void)stream_id, (void)size;
    pthread_mutex_lock(&rec.lock);
    CUpti_Activity *r = NULL;
    for (;;) {
        const CUptiResult st = cuptiActivityGetNextRecord(buffer, valid_bytes, &r);
        if (st == CUPTI_ERROR_MAX_LIMIT_REACHED) break;  // the end of the buffer
        if (st != CUPTI_SUCCESS) {
            rec.unreadable++;
            break;
        }
        keep(r);
    }
    size_t dropped = 0;
    if (cuptiActivityGetNumDroppedRecords(NULL, 0, &dropped) == CUPTI_SUCCESS) rec.dropped += dropped;
    for (int i = 0; i < rec.buffers; i++)
        if (rec.buffer[i] == buffer) rec.lent[i] = 0;
    pthread_mutex_unlock(&rec.lock);
}

static void forget_records(void) {
    pthread_mutex_lock(&rec.lock);
    rec.count = rec.link_count = 0;
    rec.dropped = rec.refused_buffers = rec.unreadable = 0;
    pthread_mutex_unlock(&rec.lock);
}

// ---- the activity kinds of a recorded step -------------------------------------------------
// The GPU's work (kernels, copies, sets) and the external correlations. CUPTI writes an
// external correlation only beside an API call's record, so the runtime's and the driver's
// API records are enabled too (a kernel carries the correlation id of the call that launched
// it: cudaLaunchKernel for ours, a driver call for cuBLASLt's); the walk skips them.
static const CUpti_ActivityKind KINDS[] = {
    CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL, CUPTI_ACTIVITY_KIND_MEMCPY, CUPTI_ACTIVITY_KIND_MEMSET,
    CUPTI_ACTIVITY_KIND_EXTERNAL_CORRELATION, CUPTI_ACTIVITY_KIND_RUNTIME, CUPTI_ACTIVITY_KIND_DRIVER,
};
enum { KIND_COUNT = sizeof KINDS / sizeof KINDS[0] };

static void disable_kinds(void) {
    for (int i = 0; i < KIND_COUNT; i++) cuptiActivityDisable(KINDS[i]);  // also those never enabled
}

// CUPTI_SUCCESS, or the first failure (then none is left enabled).
static CUptiResult enable_kinds(void) {
    for (int i = 0; i < KIND_COUNT; i++) {
        const CUptiResult st = cuptiActivityEnable(KINDS[i]);
        if (st != CUPTI_SUCCESS) {
            disable_kinds();
            return st;
        }
    }
    return CUPTI_SUCCESS;
}

// Disables the kinds and has CUPTI hand back every record (the GPU must be idle).
static void collect_records(void) {
    disable_kinds();
    CUPTI_CHECK(cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED));
}

// ---- the timer -----------------------------------------------------------------------------
static char why_not[600];

static const char *cannot(const char *what, CUptiResult st) {
    snprintf(why_not, sizeof why_not, "CUPTI cannot record the breakdown here (%s, in %s)", cupti_words(st), what);
    return why_not;
}

const char *gpu_phase_cupti_init(void) {
    for (rec.buffers = 0; rec.buffers < FIRST_BUFFERS; rec.buffers++) rec.buffer[rec.buffers] = xmalloc(BUFFER_BYTES);
    rec.capacity = 1 << 16;
    rec.activities = xmalloc(rec.capacity * sizeof *rec.activities);
    rec.link_capacity = 1 << 17;
    rec.links = xmalloc(rec.link_capacity * sizeof *rec.links);
    CUptiResult st = cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed);
    if (st != CUPTI_SUCCESS) return cannot("cuptiActivityRegisterCallbacks", st);
    // The trial: CUPTI's first enable also loads what it needs, outside any timed step.
    CUDA_CHECK(cudaDeviceSynchronize());
    forget_records();
    st = enable_kinds();
    if (st != CUPTI_SUCCESS) return cannot("cuptiActivityEnable", st);
    st = cuptiActivityPushExternalCorrelationId(CUPTI_EXTERNAL_CORRELATION_KIND_CUSTOM0, PHASE_EXTERNAL_ID_NOT_TIMED);
    if (st != CUPTI_SUCCESS) {
        disable_kinds();
        return cannot("cuptiActivityPushExternalCorrelationId", st);
    }
    gpu_hold_close(1000.0);
    CUPTI_CHECK(cuptiActivityPopExternalCorrelationId(CUPTI_EXTERNAL_CORRELATION_KIND_CUSTOM0, NULL));
    gpu_hold_open();
    CUDA_CHECK(cudaDeviceSynchronize());
    collect_records();
    pthread_mutex_lock(&rec.lock);
    const size_t kernels = rec.count, links = rec.link_count, lost = rec.dropped + rec.refused_buffers + rec.unreadable;
    int linked = 0;
    for (size_t i = 0; i < rec.count; i++)
        for (size_t j = 0; j < rec.link_count; j++)
            linked |= rec.links[j].correlation_id == rec.activities[i].correlation_id &&
                      rec.links[j].external_id == PHASE_EXTERNAL_ID_NOT_TIMED;
    pthread_mutex_unlock(&rec.lock);
    if (lost)
        snprintf(why_not, sizeof why_not, "CUPTI lost %zu records of a trial kernel", lost);
    else if (kernels == 0)
        snprintf(why_not, sizeof why_not, "CUPTI recorded no activity for a trial kernel");
    else if (!linked)
        snprintf(why_not, sizeof why_not, "CUPTI recorded a trial kernel but not the phase it was launched in "
                 "(%zu external correlation records, none for the kernel)", links);
    else
        return NULL;
    return why_not;
}

void gpu_phase_cupti_start_step(void) {
    // Work queued before (the timed steps) finishes first: none of it can be in the records.
    CUDA_CHECK(cudaDeviceSynchronize());
    forget_records();
    CUPTI_CHECK(enable_kinds());
    CUPTI_CHECK(cuptiActivityPushExternalCorrelationId(CUPTI_EXTERNAL_CORRELATION_KIND_CUSTOM0,
                                                       PHASE_EXTERNAL_ID_NOT_TIMED));
    gpu_hold_close(2000.0);  // the step is queued whole before it runs (gpu_hold.h says why)
    CUPTI_CHECK(cuptiActivityPopExternalCorrelationId(CUPTI_EXTERNAL_CORRELATION_KIND_CUSTOM0, NULL));
}

void gpu_phase_cupti_push(Category c) {
    CUPTI_CHECK(cuptiActivityPushExternalCorrelationId(CUPTI_EXTERNAL_CORRELATION_KIND_CUSTOM0, phase_external_id(c)));
}

void gpu_phase_cupti_pop(void) {
    CUPTI_CHECK(cuptiActivityPopExternalCorrelationId(CUPTI_EXTERNAL_CORRELATION_KIND_CUSTOM0, NULL));
}

double gpu_phase_cupti_finish_step(double ms[NUM_CATEGORIES]) {
    CUDA_CHECK(cudaDeviceSynchronize());
    CHECK_LAUNCH();
    collect_records();
    pthread_mutex_lock(&rec.lock);
    if (rec.dropped || rec.refused_buffers || rec.unreadable)
        DIE("time breakdown: CUPTI lost records of the step (%zu dropped, %zu buffer requests refused, %zu "
            "buffers unreadable; %zu activities kept, %d buffers of %d MiB): its times would be wrong. Raise "
            "BUFFER_BYTES in %s, or time it with GPU_PHASE_TIMER=events",
            rec.dropped, rec.refused_buffers, rec.unreadable, rec.count, rec.buffers, BUFFER_BYTES >> 20, __FILE__);
    double total;
    const char *problem = activities_attribute(rec.activities, rec.count, rec.links, rec.link_count, ms, &total);
    pthread_mutex_unlock(&rec.lock);
    if (problem) DIE("time breakdown (CUPTI): %s", problem);
    return total;
}
