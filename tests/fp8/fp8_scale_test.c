// Graded: exercise "fp8_scale" (exercises/fp8_scale.c): the delayed-scaling rule on
// hand-made amax histories, through fp8_update_scale (which picks the amax and rolls the history).
#include <float.h>
#include <math.h>

#include "common/fp8/fp8_recipe.h"
#include "tests/exercises/grading.h"
#include "tests/test_util.h"

static Fp8Meta with_history(const DelayedScaling *r, int gradient, const float *h) {
    Fp8Meta m;
    fp8_meta_init(&m, r, gradient);
    for (int i = 0; i < r->history_len; i++) m.amax_history[i] = h[i];
    return m;
}

static void test_max_of_history(void **state) {
    (void)state;
    DelayedScaling r = {FP8_RECIPE_HYBRID, 0, 4, AMAX_ALGO_MAX};
    float h[4] = {2.0f, 7.0f, 3.5f, 1.0f};
    Fp8Meta m = with_history(&r, 0, h);
    fp8_update_scale(&m, &r);
    expect_true(fabsf(m.scale - 448.0f / 7.0f) < 1e-4f, "E4M3 tensor, amax history {2, 7, 3.5, 1} (algorithm max), "
                "margin 0: scale %.9g, expected 448 / 7 = %.9g", m.scale, 448.0f / 7.0f);
    expect_true(fabsf(m.scale_inv - 7.0f / 448.0f) < 1e-7f, "scale_inv %.9g, expected 1 / scale = 7 / 448 = %.9g",
                m.scale_inv, 7.0f / 448.0f);
    // The history rolled: every entry one slot older, the oldest dropped, a fresh newest slot.
    expect_true(m.amax_history[0] == 0.0f && m.amax_history[1] == 2.0f && m.amax_history[2] == 7.0f &&
                m.amax_history[3] == 3.5f, "history after the update {%g, %g, %g, %g}, expected {0, 2, 7, 3.5}",
                m.amax_history[0], m.amax_history[1], m.amax_history[2], m.amax_history[3]);
    fp8_meta_free(&m);
}

static void test_most_recent_and_gradient_format(void **state) {
    (void)state;
    DelayedScaling r = {FP8_RECIPE_HYBRID, 0, 3, AMAX_ALGO_MOST_RECENT};
    float h[3] = {4.0f, 100.0f, 100.0f};
    Fp8Meta m = with_history(&r, 1, h);  // a gradient under HYBRID: E5M2
    fp8_update_scale(&m, &r);
    expect_int_eq(m.format, FP8_E5M2, "a gradient's format under HYBRID (0 = E4M3, 1 = E5M2)");
    expect_true(fabsf(m.scale - 57344.0f / 4.0f) < 1e-2f, "E5M2 gradient, history {4, 100, 100}, algorithm "
                "most_recent (4): scale %.9g, expected 57344 / 4 = %.9g", m.scale, 57344.0f / 4.0f);
    fp8_meta_free(&m);
}

static void test_margin(void **state) {
    (void)state;
    DelayedScaling r = {FP8_RECIPE_E4M3, 2, 2, AMAX_ALGO_MAX};
    float h[2] = {1.0f, 0.5f};
    Fp8Meta m = with_history(&r, 1, h);  // E4M3 recipe: gradients E4M3 too
    fp8_update_scale(&m, &r);
    expect_int_eq(m.format, FP8_E4M3, "a gradient's format under the E4M3 recipe (0 = E4M3, 1 = E5M2)");
    expect_true(fabsf(m.scale - 448.0f / 4.0f) < 1e-4f, "E4M3, amax 1, margin 2: scale %.9g, expected "
                "(448 / 1) / 2^2 = 112 (the margin divides)", m.scale);
    fp8_meta_free(&m);
}

static void test_zero_and_nonfinite_keep_scale(void **state) {
    (void)state;
    DelayedScaling r = {FP8_RECIPE_HYBRID, 0, 2, AMAX_ALGO_MAX};
    float zeros[2] = {0.0f, 0.0f}, infs[2] = {INFINITY, 1.0f};
    Fp8Meta m = with_history(&r, 0, zeros);
    m.scale = 3.0f;
    fp8_update_scale(&m, &r);
    expect_true(m.scale == 3.0f, "amax history all 0 (nothing seen yet), previous scale 3: scale %.9g, expected 3 "
                "(kept)", m.scale);
    fp8_meta_free(&m);
    m = with_history(&r, 0, infs);
    m.scale = 5.0f;
    fp8_update_scale(&m, &r);
    expect_true(m.scale == 5.0f, "amax history {inf, 1} (algorithm max: amax inf), previous scale 5: scale %.9g, "
                "expected 5 (kept)", m.scale);
    fp8_meta_free(&m);
    const float s_nan = fp8_compute_scale(NAN, 448.0f, 0, 9.0f);
    expect_true(s_nan == 9.0f, "fp8_compute_scale(amax NaN, 448, margin 0, previous 9) = %.9g, expected 9 (kept)",
                s_nan);
}

static void test_overflow_gives_flt_max(void **state) {
    (void)state;
    const float tiny = fp8_compute_scale(1e-40f, 448.0f, 0, 1.0f), two = fp8_compute_scale(2.0f, 448.0f, 1, 1.0f);
    expect_true(tiny == FLT_MAX, "fp8_compute_scale(amax 1e-40, 448, margin 0, previous 1) = %.9g, expected FLT_MAX "
                "= %.9g (448 / 1e-40 overflows: the largest float, not inf)", tiny, FLT_MAX);
    expect_true(fabsf(two - 112.0f) < 1e-4f, "fp8_compute_scale(amax 2, 448, margin 1, previous 1) = %.9g, expected "
                "(448 / 2) / 2^1 = 112", two);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_max_of_history),
        cmocka_unit_test(test_most_recent_and_gradient_format),
        cmocka_unit_test(test_margin),
        cmocka_unit_test(test_zero_and_nonfinite_keep_scale),
        cmocka_unit_test(test_overflow_gives_flt_max),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
