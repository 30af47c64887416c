// Graded: exercise "fp8_encode" (exercises/fp8_encode.c). Every case checks the encoder
// against the format's definition (decoding is given): all 256 codes of each format, ties,
// subnormals, saturation, NaN and signed zero.
#include <math.h>

#include "common/fp8/fp8_format.h"
#include "tests/exercises/grading.h"
#include "tests/test_util.h"

// fp8_encode(x, f) must be `want`; the message names the input.
#define expect_code(x, f, want) \
    expect_int_eq(fp8_encode((x), (f)), (want), "fp8_encode(%.9g, %s)", (double)(x), fp8_format_name(f))

// Every non-NaN code decodes to a value that encodes back to the same code.
static void round_trip(Fp8Format f) {
    int checked = 0;
    for (int c = 0; c < 256; c++) {
        float v = fp8_decode((uint8_t)c, f);
        if (isnan(v) || isinf(v)) continue;
        expect_int_eq(fp8_encode(v, f), c, "fp8_encode(%.9g, %s), the value of code 0x%02x itself", (double)v,
                      fp8_format_name(f), c);
        checked++;
    }
    expect_int_eq(checked, f == FP8_E4M3 ? 254 : 248, "finite %s codes checked", fp8_format_name(f));
}

static void test_e4m3_all_codes(void **state) {
    (void)state;
    round_trip(FP8_E4M3);
}

static void test_e5m2_all_codes(void **state) {
    (void)state;
    round_trip(FP8_E5M2);
}

// Halfway between two neighbours rounds to the one with an even mantissa; just off halfway
// rounds to the nearer.
static void test_ties_to_even(void **state) {
    (void)state;
    for (int fi = 0; fi < 2; fi++) {
        Fp8Format f = (Fp8Format)fi;
        for (int c = 1; c < 0x7a; c++) {  // positive finite neighbours (c, c+1)
            float lo = fp8_decode((uint8_t)c, f), hi = fp8_decode((uint8_t)(c + 1), f);
            float mid = 0.5f * (lo + hi);
            int even = (c & 1) ? c + 1 : c;
            expect_int_eq(fp8_encode(mid, f), even, "fp8_encode(%.9g, %s), halfway between codes 0x%02x and 0x%02x: "
                          "ties go to the even one", (double)mid, fp8_format_name(f), c, c + 1);
            expect_code(nextafterf(mid, 0.0f), f, c);
            expect_code(nextafterf(mid, INFINITY), f, c + 1);
            expect_code(-mid, f, 0x80 | even);
        }
    }
}

static void test_subnormals_and_zero(void **state) {
    (void)state;
    expect_code(ldexpf(1.0f, -9), FP8_E4M3, 0x01);   // smallest subnormal
    expect_code(ldexpf(1.0f, -10), FP8_E4M3, 0x00);  // half of it: tie to even (0)
    expect_code(ldexpf(1.5f, -10), FP8_E4M3, 0x01);
    expect_code(ldexpf(3.0f, -10), FP8_E4M3, 0x02);  // 1.5 x smallest: tie to even
    expect_code(ldexpf(1.0f, -16), FP8_E5M2, 0x01);
    expect_code(ldexpf(1.0f, -17), FP8_E5M2, 0x00);
    expect_code(ldexpf(7.0f, -10), FP8_E4M3, 0x04);  // 3.5 x smallest: tie to even (4)
    expect_code(ldexpf(15.5f, -10), FP8_E4M3, 0x08); // rounds up into the normals
    expect_code(-0.0f, FP8_E4M3, 0x80);
    expect_code(-1e-30f, FP8_E5M2, 0x80);
    expect_code(1.0f, FP8_E4M3, 0x38);
    expect_code(1.0f, FP8_E5M2, 0x3c);
}

static void test_saturation(void **state) {
    (void)state;
    expect_code(448.0f, FP8_E4M3, 0x7e);
    expect_code(464.0f, FP8_E4M3, 0x7e);  // halfway past the largest: even stays
    expect_code(500.0f, FP8_E4M3, 0x7e);
    expect_code(-1e30f, FP8_E4M3, 0xfe);
    expect_code(INFINITY, FP8_E4M3, 0x7e);
    expect_code(57344.0f, FP8_E5M2, 0x7b);
    expect_code(61440.0f, FP8_E5M2, 0x7b);  // halfway to the next binade: saturates
    expect_code(-INFINITY, FP8_E5M2, 0xfb);
}

static void test_nan(void **state) {
    (void)state;
    expect_code(NAN, FP8_E4M3, 0x7f);
    expect_code(-NAN, FP8_E4M3, 0xff);
    expect_code(NAN, FP8_E5M2, 0x7f);  // exponent all ones, mantissa non-zero
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_e4m3_all_codes), cmocka_unit_test(test_e5m2_all_codes),
        cmocka_unit_test(test_ties_to_even),   cmocka_unit_test(test_subnormals_and_zero),
        cmocka_unit_test(test_saturation),     cmocka_unit_test(test_nan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
