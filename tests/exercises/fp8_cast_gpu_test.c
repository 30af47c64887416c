// Graded: exercise "fp8_cast_gpu" (exercises/fp8_cast_gpu.cu), chapter 05.
//
// Every code against the format's definition - the nearest FP8 value to x * scale, ties to the
// even code, saturating at the largest - found by searching the decoded codes (fp8_decode), so
// that this test does not depend on the exercise fp8_encode; and the amax exactly (a max of
// fp16 values is exact). Ragged sizes (n not a multiple of a block or a warp), both formats,
// saturation, a running amax that must be kept, a largest magnitude that is negative, and
// 8192 x 4096 values with the speed line against a device-to-device copy. Each test case is one
// point.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/core/layer.h"
#include "common/fp8/fp8_format.h"
#include "exercises/gpu_exercises.h"
#include "tests/exercises/exercise_solutions.h"
#include "tests/exercises/gpu_grading.h"
#include "tests/exercises/grading.h"
#include "tests/test_util.h"

// The code of the FP8 value nearest to v (ties: the even code), saturating at the largest.
static uint8_t nearest_code(float v, Fp8Format f) {
    const int max_code = f == FP8_E4M3 ? 0x7e : 0x7b;
    const uint8_t sign = signbit(v) ? 0x80 : 0;
    const double a = fabs((double)v);
    if (a >= fp8_decode((uint8_t)max_code, f)) return sign | (uint8_t)max_code;
    int lo = 0, hi = max_code;  // decode(lo) <= a < decode(hi): positive codes grow with their value
    while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (fp8_decode((uint8_t)mid, f) <= a) lo = mid;
        else hi = mid;
    }
    const double below = a - fp8_decode((uint8_t)lo, f), above = fp8_decode((uint8_t)hi, f) - a;
    const int code = below < above ? lo : above < below ? hi : (lo % 2 == 0 ? lo : hi);
    return sign | (uint8_t)code;
}

typedef struct {
    int64_t n;
    Fp8Format format;
    void *x, *out;
    float *scale, *amax;
} Problem;

static void run_yours(void *ctx) {
    Problem *p = ctx;
    ex_fp8_cast(p->x, p->out, p->n, p->scale, p->amax, p->format);
}

static void run_solution(void *ctx) {
    Problem *p = ctx;
    solution_fp8_cast(p->x, p->out, p->n, p->scale, p->amax, p->format);
}

// x: fp16-exact values; one element may be replaced by `special` at a random place.
static void check(int64_t n, Fp8Format format, float range, float scale, float amax_before, float special,
                  int time_it) {
    float *x = random_floats(n, -range, range);
    if (special != 0.0f) x[(int64_t)(test_seed() % (uint64_t)n)] = special;
    round_to_dtype(x, n, DTYPE_FP16);
    int64_t at = 0;
    for (int64_t i = 0; i < n; i++)
        if (fabsf(x[i]) > fabsf(x[at])) at = i;
    const float max_abs = fabsf(x[at]), want_amax = fmaxf(amax_before, max_abs);

    Problem p = {n, format, gpu_upload_fp16(x, n), gpu_alloc_poisoned((size_t)n), gpu_upload_f32(&scale, 1),
                 gpu_upload_f32(&amax_before, 1)};
    char what[160];
    snprintf(what, sizeof what, "ex_fp8_cast of %lld values in [%g, %g], %s, scale %g, *amax %g before",
             (long long)n, -range, range, fp8_format_name(format), scale, amax_before);
    run_yours(&p);
    gpu_expect_no_error(what);
    uint8_t *out = malloc((size_t)n);
    float amax;
    gpu_download_bytes(out, p.out, (size_t)n);
    gpu_download_f32(&amax, p.amax, 1);
    for (int64_t i = 0; i < n; i++) {
        const float v = x[i] * scale;
        const uint8_t want = nearest_code(v, format);
        if (out[i] != want)
            fail_msg("%s: out[%lld] for x = %.9g (x * scale = %.9g) is 0x%02x (%g), expected 0x%02x (%g)%s", what,
                     (long long)i, x[i], v, out[i], fp8_decode(out[i], format), want, fp8_decode(want, format),
                     out[i] == 0xff ? " - 0xff is what the test filled out with: was it written?" : "");
    }
    if (amax != want_amax) {
        const char *hint = "is every block's maximum folded into *amax with an atomic max, keeping what was there?";
        if (fabsf(amax - want_amax * scale) <= 1e-6f * want_amax * scale) hint = "that is the amax of x * scale: "
            "record the amax of x itself (the scale is applied again when the next one is computed)";
        float max_signed = x[0];
        for (int64_t i = 0; i < n; i++) max_signed = fmaxf(max_signed, x[i]);
        if (amax == fmaxf(amax_before, max_signed) && x[at] < 0) hint = "that is max x: the amax is the max of |x|";
        if (amax == max_abs && amax_before > max_abs) hint = "*amax was larger before the call: fold into it (max), "
            "do not overwrite it";
        fail_msg("%s: *amax is %.9g, expected %.9g = max(*amax before %g, max |x| = |x[%lld]| = %g); %s", what, amax,
                 want_amax, amax_before, (long long)at, max_abs, hint);
    }
    print_message("  %s: codes and amax exact\n", what);
    if (time_it) {
        const double yours = gpu_time_us(run_yours, &p), reference = gpu_time_us(run_solution, &p);
        const double bytes = 3.0 * n;  // 2 bytes read, 1 written per value
        print_speed_line("your kernel", yours, reference, bytes, gpu_copy_bytes_per_s((size_t)n * 2),
                         "copy bandwidth");
    }
    gpu_free(p.x), gpu_free(p.out), gpu_free(p.scale), gpu_free(p.amax);
    free(x), free(out);
}

// E4M3: x * scale within the range, down into the subnormals; n odd.
static void test_e4m3_ragged(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    check(100003, FP8_E4M3, 3.0f, 37.5f, 0.0f, 0.0f, 0);
}

// E5M2 (gradients), x * scale up to 80000: the values past 57344 must saturate.
static void test_e5m2_saturating(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    check(77777, FP8_E5M2, 40.0f, 2000.0f, 0.0f, 0.0f, 0);
}

// *amax already holds 100 from earlier in the step: the result is max(100, max |x|) = 100.
static void test_amax_keeps_larger_value(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    check(5000, FP8_E4M3, 2.0f, 1.0f, 100.0f, 0.0f, 0);
}

// The largest magnitude is a negative value (-7.5) at a random place among a million.
static void test_amax_of_a_negative_value(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    check(1000001, FP8_E4M3, 1.0f, 16.0f, 0.0f, -7.5f, 0);
}

// 8192 x 4096 values: correct, and how fast.
static void test_large_and_speed(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    check((int64_t)8192 * 4096, FP8_E4M3, 4.0f, 100.0f, 0.0f, 0.0f, 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_e4m3_ragged),
        cmocka_unit_test(test_e5m2_saturating),
        cmocka_unit_test(test_amax_keeps_larger_value),
        cmocka_unit_test(test_amax_of_a_negative_value),
        cmocka_unit_test(test_large_and_speed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
