// The time breakdown's arithmetic, on the CPU (common/core/breakdown.h): which calls open an
// interval, how intervals become per-category times that add up to the step, the work each
// category does, and the floors and fractions computed from measured rates.
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

// One step by hand: two phases, one with a nested phase inside, gaps between them.
static void test_attribution_by_hand(void **state) {
    (void)state;
    PhaseMarks m;
    phase_marks_init(&m, 16);
    double t[16];
    t[phase_marks_start(&m)] = 0.0;
    t[phase_marks_enter(&m, CAT_GEMM_FPROP)] = 1.0;   // 0 - 1: other (a launch gap)
    t[phase_marks_leave(&m)] = 3.0;                   // 1 - 3: GEMM fprop
    t[phase_marks_enter(&m, CAT_ATTN_FWD)] = 3.5;     // 3 - 3.5: other
    assert_int_equal(phase_marks_enter(&m, CAT_ELEMENTWISE), -1);  // nested: attention keeps it
    assert_int_equal(phase_marks_leave(&m), -1);
    t[phase_marks_leave(&m)] = 6.0;                   // 3.5 - 6: attention fwd
    t[phase_marks_enter(&m, CAT_LAYERNORM)] = 6.25;   // 6 - 6.25: other
    t[phase_marks_leave(&m)] = 7.0;                   // 6.25 - 7: LayerNorm
    t[phase_marks_finish(&m)] = 7.5;                  // 7 - 7.5: other
    assert_int_equal(m.count, 8);
    double ms[NUM_CATEGORIES], total;
    assert_null(phase_marks_attribute(&m, t, ms, &total));
    assert_near(ms[CAT_OTHER], 2.25, 1e-12);
    assert_near(ms[CAT_GEMM_FPROP], 2.0, 1e-12);
    assert_near(ms[CAT_ATTN_FWD], 2.5, 1e-12);
    assert_near(ms[CAT_ELEMENTWISE], 0.0, 0);
    assert_near(ms[CAT_LAYERNORM], 0.75, 1e-12);
    assert_near(total, 7.5, 1e-12);
    assert_near(sum(ms), total, 1e-12);
    phase_marks_free(&m);
}

// Random nestings and times against a direct simulation: walk the same calls and give each
// interval to the outermost open phase (or "other").
static void test_attribution_random(void **state) {
    (void)state;
    srand((unsigned)test_seed());
    for (int trial = 0; trial < 200; trial++) {
        PhaseMarks m;
        phase_marks_init(&m, 512);
        double t[512], expect[NUM_CATEGORIES] = {0};
        double now = (rand() % 100) * 0.01;
        Category stack[64];
        int depth = 0;
        t[phase_marks_start(&m)] = now;
        for (int call = 0; call < 100; call++) {
            double dt = (rand() % 1000) * 1e-3;
            expect[depth ? stack[0] : CAT_OTHER] += dt;  // the time since the last call
            now += dt;
            int opening = depth == 0 || (depth < 60 && rand() % 2);
            int mark;
            if (opening) {
                Category c = (Category)(1 + rand() % (NUM_CATEGORIES - 1));
                stack[depth++] = c;
                mark = phase_marks_enter(&m, c);
                assert_int_equal(mark >= 0, depth == 1);
            } else {
                depth--;
                mark = phase_marks_leave(&m);
                assert_int_equal(mark >= 0, depth == 0);
            }
            if (mark >= 0) t[mark] = now;
        }
        while (depth > 0) {
            double dt = (rand() % 1000) * 1e-3;
            expect[stack[0]] += dt;
            now += dt;
            depth--;
            int mark = phase_marks_leave(&m);
            if (mark >= 0) t[mark] = now;
        }
        double dt = 0.125;
        expect[CAT_OTHER] += dt;
        now += dt;
        t[phase_marks_finish(&m)] = now;
        double ms[NUM_CATEGORIES], total;
        assert_null(phase_marks_attribute(&m, t, ms, &total));
        for (int c = 0; c < NUM_CATEGORIES; c++) assert_near(ms[c], expect[c], 1e-9);
        assert_near(total, now - t[0], 1e-9);
        assert_near(sum(ms), total, 1e-9);
        phase_marks_free(&m);
    }
}

static void test_attribution_errors(void **state) {
    (void)state;
    PhaseMarks m;
    phase_marks_init(&m, 8);
    double t[8] = {0, 1, 2, 3}, ms[NUM_CATEGORIES], total;
    phase_marks_start(&m);
    assert_non_null(strstr(phase_marks_attribute(&m, t, ms, &total), "fewer than two"));
    phase_marks_enter(&m, CAT_GEMM_DGRAD);
    phase_marks_finish(&m);
    assert_non_null(strstr(phase_marks_attribute(&m, t, ms, &total), "left open"));
    phase_marks_start(&m);
    phase_marks_enter(&m, CAT_GEMM_WGRAD);
    phase_marks_leave(&m);
    phase_marks_finish(&m);
    double backwards[4] = {0, 2, 1, 3};
    assert_non_null(strstr(phase_marks_attribute(&m, backwards, ms, &total), "before the previous"));
    assert_null(phase_marks_attribute(&m, t, ms, &total));
    assert_near(ms[CAT_GEMM_WGRAD], 1.0, 0);
    phase_marks_free(&m);
}

static LayerConfig quickstart(void) {
    LayerConfig c = layer_config_quickstart();
    return c;
}

// The quickstart's work, by hand: T = 8192 tokens, h = 4096, f = 16384, heads 32, b 4, s 2048.
static void test_work_quickstart(void **state) {
    (void)state;
    LayerConfig c = quickstart();
    LayerVariant v = {LAYER_SERIAL, 0, 1};
    CategoryWork w;
    layer_category_work(&c, &v, &w);
    const double t = 8192, h = 4096, f = 16384;
    const double gemm = 2 * t * h * (3 * h + h + 2 * f);  // 3.2985e12
    assert_near(w.flops[CAT_GEMM_FPROP], gemm, 1);
    assert_near(w.flops[CAT_GEMM_DGRAD], gemm, 1);
    assert_near(w.flops[CAT_GEMM_WGRAD], gemm, 1);
    const double attn = 4.0 * 4 * 2048.0 * 2048 * h;
    assert_near(w.flops[CAT_ATTN_FWD], attn, 1);
    assert_near(w.flops[CAT_ATTN_BWD], 2.5 * attn, 1);
    // Model FLOPs (layer_train_flops) count attention's backward as 2x its forward, not 2.5x.
    double model = 3 * gemm + 3 * attn;
    assert_near(model, layer_train_flops(&c), 1);
    assert_near(w.bytes[CAT_LAYERNORM], 2 * ((2 + 4) * t * h * 2 + 16 * t), 1);
    assert_near(w.bytes[CAT_ELEMENTWISE], 5 * t * h * 2, 1);  // dropout 0.1: forward 3, backward 2
    assert_near(w.bytes[CAT_FP8_CAST], 0, 0);
    assert_near(w.bytes[CAT_COMM], 0, 0);
    assert_near(w.flops[CAT_OTHER] + w.bytes[CAT_OTHER], 0, 0);

    c.hidden_dropout = 0;  // no dropout: the backward pass of the residual add is gone
    layer_category_work(&c, &v, &w);
    assert_near(w.bytes[CAT_ELEMENTWISE], 3 * t * h * 2, 1);
    c.causal = 1;
    layer_category_work(&c, &v, &w);
    assert_near(w.flops[CAT_ATTN_FWD], attn / 2, 1);
}

static void test_work_variants(void **state) {
    (void)state;
    LayerConfig c = quickstart();
    const double t = 8192, h = 4096, f = 16384;
    CategoryWork serial, parallel, fp8, parallel_fp8, tp2;
    layer_category_work(&c, &(LayerVariant){LAYER_SERIAL, 0, 1}, &serial);
    layer_category_work(&c, &(LayerVariant){LAYER_PARALLEL, 0, 1}, &parallel);
    layer_category_work(&c, &(LayerVariant){LAYER_SERIAL, 1, 1}, &fp8);
    layer_category_work(&c, &(LayerVariant){LAYER_PARALLEL, 1, 1}, &parallel_fp8);
    layer_category_work(&c, &(LayerVariant){LAYER_SERIAL, 0, 2}, &tp2);
    // The parallel layer's fused GEMMs do the serial layer's FLOPs, with one LayerNorm.
    assert_near(parallel.flops[CAT_GEMM_FPROP], serial.flops[CAT_GEMM_FPROP], 1);
    assert_near(parallel.bytes[CAT_LAYERNORM], serial.bytes[CAT_LAYERNORM] / 2, 1);
    // FP8: x, W and dy of each Linear read in 16 bits (2 bytes) and written twice in FP8.
    double serial_casts = 0;
    const double lin[4][2] = {{h, 3 * h}, {h, h}, {h, f}, {f, h}};
    for (int i = 0; i < 4; i++) serial_casts += (t * lin[i][0] + lin[i][0] * lin[i][1] + t * lin[i][1]) * 4;
    assert_near(fp8.bytes[CAT_FP8_CAST], serial_casts, 1);
    const double fused_casts = (t * h + h * (3 * h + f) + t * (3 * h + f)) * 4 + (t * (h + f) + (h + f) * h + t * h) * 4;
    assert_near(parallel_fp8.bytes[CAT_FP8_CAST], fused_casts, 1);
    // Tensor parallel: each rank does half the GEMM and attention FLOPs and all-reduces 4 [T, h].
    assert_near(tp2.flops[CAT_GEMM_WGRAD], serial.flops[CAT_GEMM_WGRAD] / 2, 1);
    assert_near(tp2.flops[CAT_ATTN_BWD], serial.flops[CAT_ATTN_BWD] / 2, 1);
    assert_near(tp2.bytes[CAT_COMM], 4 * t * h * 2, 1);
    assert_near(tp2.bytes[CAT_LAYERNORM], serial.bytes[CAT_LAYERNORM], 1);
}

// Floors: work over rate, by hand.
static void test_floors(void **state) {
    (void)state;
    LayerConfig c = quickstart();
    LayerVariant v = {LAYER_SERIAL, 0, 1};
    CategoryWork w;
    layer_category_work(&c, &v, &w);
    MeasuredRates r = {.gemm_tflops = 800, .fp8_gemm_tflops = 1600, .attn_fwd_tflops = 500, .attn_bwd_tflops = 400,
                       .copy_gbps = 4000, .allreduce_gbps = 0};
    double floor[NUM_CATEGORIES];
    category_floors(&w, &v, &r, floor);
    assert_near(floor[CAT_GEMM_FPROP], 3.298534883328e12 / 800e12 * 1e3, 1e-9);  // 4.1232 ms
    assert_near(floor[CAT_GEMM_FPROP], 4.12316860416, 1e-9);
    assert_near(floor[CAT_ATTN_FWD], 0.274877906944e12 / 500e12 * 1e3, 1e-9);      // 0.5498 ms
    assert_near(floor[CAT_ATTN_BWD], 2.5 * 0.274877906944e12 / 400e12 * 1e3, 1e-9);  // 1.718 ms
    assert_near(floor[CAT_LAYERNORM], w.bytes[CAT_LAYERNORM] / 4000e9 * 1e3, 1e-9);
    assert_near(floor[CAT_ELEMENTWISE], 335544320.0 / 4000e9 * 1e3, 1e-12);  // 5 x 64 MiB: 0.0839 ms
    assert_near(floor[CAT_OTHER], 0, 0);
    assert_near(floor[CAT_FP8_CAST], 0, 0);  // no work: 0, though nothing was measured
    assert_near(floor[CAT_COMM], 0, 0);
    double total = floor_total_ms(floor);
    assert_near(total, 3 * 4.12316860416 + floor[CAT_ATTN_FWD] + floor[CAT_ATTN_BWD] + floor[CAT_LAYERNORM] +
                                   floor[CAT_ELEMENTWISE], 1e-9);

    // FP8 GEMMs are floored at the FP8 rate.
    LayerVariant v8 = {LAYER_SERIAL, 1, 1};
    layer_category_work(&c, &v8, &w);
    category_floors(&w, &v8, &r, floor);
    assert_near(floor[CAT_GEMM_DGRAD], 4.12316860416 / 2, 1e-9);
    assert_true(floor[CAT_FP8_CAST] > 0);

    // Work without a measured rate has no floor: NAN, and the total is NAN.
    r.attn_bwd_tflops = 0;
    category_floors(&w, &v8, &r, floor);
    assert_true(isnan(floor[CAT_ATTN_BWD]));
    assert_true(isnan(floor_total_ms(floor)));
    LayerVariant tp2 = {LAYER_SERIAL, 0, 2};
    layer_category_work(&c, &tp2, &w);
    category_floors(&w, &tp2, &r, floor);
    assert_true(isnan(floor[CAT_COMM]));  // no all-reduce measured
    r.allreduce_gbps = 100;
    category_floors(&w, &tp2, &r, floor);
    assert_near(floor[CAT_COMM], 4 * 8192.0 * 4096 * 2 / 100e9 * 1e3, 1e-9);  // 2.68 ms
}

// The floors at the power limit: the compute categories at the limit_ rates, the bandwidth ones
// as before; not measured, those floors are unknown.
static void test_floors_at_power_limit(void **state) {
    (void)state;
    LayerConfig c = quickstart();
    LayerVariant v8 = {LAYER_SERIAL, 1, 1};
    CategoryWork w;
    layer_category_work(&c, &v8, &w);
    MeasuredRates r = {.gemm_tflops = 800, .fp8_gemm_tflops = 1600, .attn_fwd_tflops = 500, .attn_bwd_tflops = 400,
                       .copy_gbps = 4000};
    double burst[NUM_CATEGORIES], held[NUM_CATEGORIES];
    category_floors(&w, &v8, &r, burst);
    MeasuredRates at_limit = rates_at_power_limit(&r);  // nothing measured at the limit
    category_floors(&w, &v8, &at_limit, held);
    assert_true(isnan(held[CAT_GEMM_FPROP]) && isnan(held[CAT_ATTN_FWD]) && isnan(held[CAT_ATTN_BWD]));
    assert_near(held[CAT_LAYERNORM], burst[CAT_LAYERNORM], 0);
    r.limit_gemm_tflops = 700, r.limit_fp8_gemm_tflops = 1200, r.limit_attn_fwd_tflops = 400;
    r.limit_attn_bwd_tflops = 320;
    at_limit = rates_at_power_limit(&r);
    category_floors(&w, &v8, &at_limit, held);
    assert_near(held[CAT_GEMM_WGRAD], burst[CAT_GEMM_WGRAD] * 1600 / 1200, 1e-9);  // FP8 GEMMs: the FP8 rate
    assert_near(held[CAT_ATTN_FWD], burst[CAT_ATTN_FWD] * 500 / 400, 1e-9);
    assert_near(held[CAT_ATTN_BWD], burst[CAT_ATTN_BWD] * 400 / 320, 1e-9);
    assert_near(held[CAT_FP8_CAST], burst[CAT_FP8_CAST], 0);
    assert_near(held[CAT_ELEMENTWISE], burst[CAT_ELEMENTWISE], 0);
    LayerVariant v = {LAYER_SERIAL, 0, 1};
    layer_category_work(&c, &v, &w);
    category_floors(&w, &v, &r, burst);
    category_floors(&w, &v, &at_limit, held);
    assert_near(held[CAT_GEMM_FPROP], burst[CAT_GEMM_FPROP] * 800 / 700, 1e-9);
    assert_near(at_limit.copy_gbps, 4000, 0);
}

static void test_fractions(void **state) {
    (void)state;
    assert_near(model_flops_utilisation(1e12, 2.0, 1000), 0.5, 1e-12);
    LayerConfig c = quickstart();  // 10.9 PFLOP at 17.75 ms against 800 TFLOP/s: 76.8 %
    assert_near(model_flops_utilisation(layer_train_flops(&c), 17.75, 800),
                        layer_train_flops(&c) / 17.75e-3 / 800e12, 1e-12);
    assert_true(isnan(model_flops_utilisation(1e12, 0, 1000)));
    assert_true(isnan(model_flops_utilisation(1e12, 2, 0)));
    assert_near(time_over_floor(17.75, 15.0), 17.75 / 15.0, 1e-12);
    assert_true(isnan(time_over_floor(17.75, NAN)));
    assert_true(isnan(time_over_floor(17.75, 0)));
}

static void test_names(void **state) {
    (void)state;
    for (int c = 0; c < NUM_CATEGORIES; c++) {
        assert_non_null(category_name((Category)c));
        assert_string_not_equal(category_name((Category)c), "?");
        for (int d = 0; d < c; d++) assert_string_not_equal(category_key((Category)c), category_key((Category)d));
    }
    assert_string_equal(category_key(CAT_GEMM_WGRAD), "gemm_wgrad");
    assert_string_equal(category_name(NUM_CATEGORIES), "?");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attribution_by_hand), cmocka_unit_test(test_attribution_random),
        cmocka_unit_test(test_attribution_errors),  cmocka_unit_test(test_work_quickstart),
        cmocka_unit_test(test_work_variants),       cmocka_unit_test(test_floors),
        cmocka_unit_test(test_floors_at_power_limit),
        cmocka_unit_test(test_fractions),           cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
