// The CUPTI timer's attribution, on the CPU (common/core/breakdown.h: activities_attribute):
// synthetic activity records and external-correlation links, as common/gpu/gpu_phase.c
// collects them from CUPTI, walked into per-category times - sequences with launch gaps,
// overlapping work on two streams, launches outside every phase, nested phases, the hold
// kernel left out, the records that must be refused, and random timelines against a
// nanosecond-by-nanosecond painting of the same rule.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/breakdown.h"
#include "tests/test_util.h"

// |a - b| <= tol, in double precision (cmocka's assert_float_equal rounds to float).
#define assert_near(a, b, tol)                                                                  \
    do {                                                                                        \
        double a_ = (a), b_ = (b);                                                              \
        if (!(fabs(a_ - b_) <= (tol))) fail_msg("%s = %.12g, expected %.12g (tolerance %g)", #a, a_, b_, (double)(tol)); \
    } while (0)

static double sum(const double ms[NUM_CATEGORIES]) {
    double s = 0;
    for (int c = 0; c < NUM_CATEGORIES; c++) s += ms[c];
    return s;
}

// An activity from start to end, in microseconds from an origin far from 0 (CUPTI's clock is
// the host's in ns: large numbers, and 0 means "not timed").
enum { ORIGIN_NS = 1000000000 };
static TimedActivity act(double start_us, double end_us, uint32_t correlation) {
    return (TimedActivity){(uint64_t)(ORIGIN_NS + start_us * 1000), (uint64_t)(ORIGIN_NS + end_us * 1000), correlation};
}

static CorrelationLink link_to(uint32_t correlation, Category c) {
    return (CorrelationLink){correlation, phase_external_id(c)};
}

// One stream, by hand: phases with gaps between them, and a kernel launched outside them.
static void test_sequence_with_gaps(void **state) {
    (void)state;
    TimedActivity a[] = {
        act(10, 30, 1),  // GEMM fprop
        act(31, 36, 2),  // LayerNorm, after a gap of 1 us
        act(36, 40, 3),  // no link: launched outside every phase -> other
        act(45, 60, 4),  // attention fwd, after 5 us where nothing ran
    };
    CorrelationLink l[] = {link_to(4, CAT_ATTN_FWD), link_to(1, CAT_GEMM_FPROP), link_to(2, CAT_LAYERNORM)};
    double ms[NUM_CATEGORIES], total;
    assert_null(activities_attribute(a, 4, l, 3, ms, &total));
    assert_near(ms[CAT_GEMM_FPROP], 0.020, 1e-12);
    assert_near(ms[CAT_LAYERNORM], 0.005, 1e-12);
    assert_near(ms[CAT_ATTN_FWD], 0.015, 1e-12);
    assert_near(ms[CAT_OTHER], 0.001 + 0.004 + 0.005, 1e-12);  // gap, the unmarked kernel, gap
    assert_near(total, 0.050, 1e-12);                        // first start to last end
    assert_near(sum(ms), total, 1e-12);
}

// The records arrive in any order (CUPTI's buffers are not sorted by start): the walk sorts.
static void test_order_of_records(void **state) {
    (void)state;
    TimedActivity a[] = {act(45, 60, 4), act(10, 30, 1), act(31, 36, 2)};
    CorrelationLink l[] = {link_to(1, CAT_GEMM_FPROP), link_to(2, CAT_LAYERNORM), link_to(4, CAT_ATTN_FWD)};
    double ms[NUM_CATEGORIES], total;
    assert_null(activities_attribute(a, 3, l, 3, ms, &total));
    assert_near(ms[CAT_GEMM_FPROP], 0.020, 1e-12);
    assert_near(ms[CAT_OTHER], 0.001 + 0.009, 1e-12);
    assert_near(total, 0.050, 1e-12);
}

// Work on another stream (step 07's collectives) overlapping the default stream's: each
// stretch of time is counted once, for whichever activity started first.
static void test_overlap_on_two_streams(void **state) {
    (void)state;
    TimedActivity a[] = {
        act(0, 100, 1),    // GEMM dgrad on the default stream
        act(60, 150, 2),   // an all-reduce on the side stream: 60-100 is the GEMM's already
        act(70, 90, 3),    // a LayerNorm wholly inside both: nothing left for it
        act(150, 160, 4),  // wgrad, right after the all-reduce (no gap)
        act(155, 170, 5),  // another collective: 160-170 only
    };
    CorrelationLink l[] = {link_to(1, CAT_GEMM_DGRAD), link_to(2, CAT_COMM), link_to(3, CAT_LAYERNORM),
                           link_to(4, CAT_GEMM_WGRAD), link_to(5, CAT_COMM)};
    double ms[NUM_CATEGORIES], total;
    assert_null(activities_attribute(a, 5, l, 5, ms, &total));
    assert_near(ms[CAT_GEMM_DGRAD], 0.100, 1e-12);
    assert_near(ms[CAT_COMM], 0.050 + 0.010, 1e-12);
    assert_near(ms[CAT_LAYERNORM], 0.0, 0);
    assert_near(ms[CAT_GEMM_WGRAD], 0.010, 1e-12);
    assert_near(ms[CAT_OTHER], 0.0, 0);
    assert_near(total, 0.170, 1e-12);  // not 100 + 90 + 20 + 10 + 15
    assert_near(sum(ms), total, 1e-12);
}

// Two activities that start together: the shorter one first, the longer one gets the rest.
static void test_same_start(void **state) {
    (void)state;
    TimedActivity a[] = {act(0, 30, 1), act(0, 10, 2)};
    CorrelationLink l[] = {link_to(1, CAT_ATTN_BWD), link_to(2, CAT_FP8_CAST)};
    double ms[NUM_CATEGORIES], total;
    assert_null(activities_attribute(a, 2, l, 2, ms, &total));
    assert_near(ms[CAT_FP8_CAST], 0.010, 1e-12);
    assert_near(ms[CAT_ATTN_BWD], 0.020, 1e-12);
    assert_near(total, 0.030, 1e-12);
}

// The hold kernel (PHASE_EXTERNAL_ID_NOT_TIMED) is recorded but left out: the step starts at
// the first kernel after it, and the wait is nobody's.
static void test_hold_left_out(void **state) {
    (void)state;
    TimedActivity a[] = {act(0, 5000, 9), act(5001, 5011, 10), act(5011, 5021, 11)};
    CorrelationLink l[] = {{9, PHASE_EXTERNAL_ID_NOT_TIMED}, link_to(10, CAT_LAYERNORM), link_to(11, CAT_ELEMENTWISE)};
    double ms[NUM_CATEGORIES], total;
    assert_null(activities_attribute(a, 3, l, 3, ms, &total));
    assert_near(ms[CAT_LAYERNORM], 0.010, 1e-12);
    assert_near(ms[CAT_ELEMENTWISE], 0.010, 1e-12);
    assert_near(ms[CAT_OTHER], 0.0, 0);
    assert_near(total, 0.020, 1e-12);
}

// ---- nesting: the links a phase stack gives, as gpu_phase.c makes them --------------------
// A stand-in for CUPTI's thread-local stack of external ids and its correlation ids, driven by
// the same rule as gpu_phase.c: push where phase_marks_enter returns a mark, pop where
// phase_marks_leave does; every launch gets the next correlation id and, if an id is pushed,
// a link to it.
typedef struct {
    PhaseMarks marks;
    uint64_t stack[16];
    int depth;
    uint32_t next_correlation;
    CorrelationLink links[64];
    size_t link_count;
} FakeCupti;

static void fake_enter(FakeCupti *f, Category c) {
    if (phase_marks_enter(&f->marks, c) >= 0) f->stack[f->depth++] = phase_external_id(c);
}

static void fake_leave(FakeCupti *f) {
    if (phase_marks_leave(&f->marks) >= 0) f->depth--;
}

static uint32_t fake_launch(FakeCupti *f) {
    const uint32_t id = f->next_correlation++;
    if (f->depth > 0) f->links[f->link_count++] = (CorrelationLink){id, f->stack[f->depth - 1]};
    return id;
}

// Step 01's attention launches a dropout kernel whose launcher opens an "elementwise" phase:
// the attention keeps it. A launch after the phases close is "other".
static void test_nested_phase_keeps_outer_category(void **state) {
    (void)state;
    FakeCupti f = {.next_correlation = 100};
    phase_marks_init(&f.marks, 16);
    phase_marks_start(&f.marks);
    fake_enter(&f, CAT_ATTN_FWD);
    TimedActivity a[4];
    a[0] = act(0, 10, fake_launch(&f));  // QK^T
    fake_enter(&f, CAT_ELEMENTWISE);
    a[1] = act(10, 14, fake_launch(&f));  // dropout, nested
    fake_leave(&f);
    a[2] = act(14, 20, fake_launch(&f));  // PV
    fake_leave(&f);
    a[3] = act(21, 22, fake_launch(&f));  // outside every phase
    assert_int_equal(f.depth, 0);
    assert_int_equal(f.link_count, 3);  // the last launch has none
    double ms[NUM_CATEGORIES], total;
    assert_null(activities_attribute(a, 4, f.links, f.link_count, ms, &total));
    assert_near(ms[CAT_ATTN_FWD], 0.020, 1e-12);
    assert_near(ms[CAT_ELEMENTWISE], 0.0, 0);
    assert_near(ms[CAT_OTHER], 0.002, 1e-12);
    assert_near(total, 0.022, 1e-12);
    phase_marks_free(&f.marks);
}

// ---- what must be refused ------------------------------------------------------------------
static void test_refusals(void **state) {
    (void)state;
    double ms[NUM_CATEGORIES], total;
    TimedActivity a[2];
    CorrelationLink l[2];
    assert_non_null(strstr(activities_attribute(a, 0, l, 0, ms, &total), "no kernel"));
    a[0] = act(0, 10, 1);
    l[0] = (CorrelationLink){1, PHASE_EXTERNAL_ID_NOT_TIMED};  // only the hold: no step
    assert_non_null(strstr(activities_attribute(a, 1, l, 1, ms, &total), "no kernel"));
    a[0] = (TimedActivity){0, 5, 1};  // CUPTI could not time it
    assert_non_null(strstr(activities_attribute(a, 1, l, 0, ms, &total), "without a timestamp"));
    a[0] = act(10, 5, 1);
    assert_non_null(strstr(activities_attribute(a, 1, l, 0, ms, &total), "ends before"));
    a[0] = act(0, 10, 1);
    l[0] = (CorrelationLink){1, NUM_CATEGORIES + 1};  // no category's id
    assert_non_null(strstr(activities_attribute(a, 1, l, 1, ms, &total), "no category"));
    l[0] = link_to(1, CAT_GEMM_FPROP);
    l[1] = link_to(1, CAT_GEMM_DGRAD);
    assert_non_null(strstr(activities_attribute(a, 1, l, 2, ms, &total), "two phases"));
    l[1] = link_to(1, CAT_GEMM_FPROP);  // the same link twice (a runtime and a driver call): fine
    assert_null(activities_attribute(a, 1, l, 2, ms, &total));
    assert_near(ms[CAT_GEMM_FPROP], 0.010, 1e-12);
}

// ---- random timelines against a painting of the rule -------------------------------------
// Each nanosecond from the first start to the last end belongs to the first activity (in order
// of start, then end, then correlation id) that covers it, or to "other" if none does; the hold
// is nobody's and is not part of the step. Painted one ns at a time over a short timeline.
static int earlier(const TimedActivity *x, const TimedActivity *y) {
    if (x->start_ns != y->start_ns) return x->start_ns < y->start_ns;
    if (x->end_ns != y->end_ns) return x->end_ns < y->end_ns;
    return x->correlation_id < y->correlation_id;
}

static void test_random_against_painting(void **state) {
    (void)state;
    srand((unsigned)test_seed());
    enum { N = 40, SPAN = 600 };
    for (int trial = 0; trial < 300; trial++) {
        TimedActivity a[N], copy[N];
        CorrelationLink l[2 * N];
        Category cat_of[N];  // by correlation id (1 .. N)
        int timed[N];
        size_t nl = 0;
        for (int i = 0; i < N; i++) {
            const uint64_t start = ORIGIN_NS + (uint64_t)(rand() % SPAN);
            const uint64_t len = (uint64_t)(rand() % 4 == 0 ? rand() % 120 : rand() % 15);  // some long, some zero
            a[i] = (TimedActivity){start, start + len, (uint32_t)(i + 1)};
            const int kind = rand() % 10;
            timed[i] = kind != 0;
            cat_of[i] = kind <= 1 ? CAT_OTHER : (Category)(1 + rand() % (NUM_CATEGORIES - 1));
            if (kind == 0) l[nl++] = (CorrelationLink){(uint32_t)(i + 1), PHASE_EXTERNAL_ID_NOT_TIMED};
            else if (kind >= 2) {
                l[nl++] = link_to((uint32_t)(i + 1), cat_of[i]);
                if (rand() % 3 == 0) l[nl++] = link_to((uint32_t)(i + 1), cat_of[i]);  // runtime + driver
            }
        }
        memcpy(copy, a, sizeof a);
        // The painting.
        uint64_t lo = UINT64_MAX, hi = 0;
        for (int i = 0; i < N; i++)
            if (timed[i]) lo = a[i].start_ns < lo ? a[i].start_ns : lo, hi = a[i].end_ns > hi ? a[i].end_ns : hi;
        double expect[NUM_CATEGORIES] = {0};
        for (uint64_t t = lo; t < hi; t++) {
            int owner = -1;
            for (int i = 0; i < N; i++)
                if (timed[i] && a[i].start_ns <= t && t < a[i].end_ns && (owner < 0 || earlier(&a[i], &a[owner])))
                    owner = i;
            expect[owner < 0 ? CAT_OTHER : cat_of[owner]] += 1e-6;
        }
        double ms[NUM_CATEGORIES], total;
        const char *problem = activities_attribute(copy, N, l, nl, ms, &total);
        if (lo > hi) {  // every activity was the hold
            assert_non_null(problem);
            continue;
        }
        assert_null(problem);
        for (int c = 0; c < NUM_CATEGORIES; c++) assert_near(ms[c], expect[c], 1e-9);
        assert_near(total, (double)(hi - lo) * 1e-6, 1e-12);
        assert_near(sum(ms), total, 1e-12);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sequence_with_gaps),
        cmocka_unit_test(test_order_of_records),
        cmocka_unit_test(test_overlap_on_two_streams),
        cmocka_unit_test(test_same_start),
        cmocka_unit_test(test_hold_left_out),
        cmocka_unit_test(test_nested_phase_keeps_outer_category),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_random_against_painting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
