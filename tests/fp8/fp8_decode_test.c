// Decoding FP8 (not an exercise): the values of selected codes, NaN and infinity patterns.
#include <math.h>

#include "common/fp8/fp8_format.h"
#include "tests/test_util.h"

static void test_decode_values(void **state) {
    (void)state;
    assert_true(fp8_decode(0x38, FP8_E4M3) == 1.0f);
    assert_true(fp8_decode(0x7e, FP8_E4M3) == 448.0f);
    assert_true(fp8_decode(0x01, FP8_E4M3) == ldexpf(1.0f, -9));
    assert_true(fp8_decode(0x08, FP8_E4M3) == ldexpf(1.0f, -6));  // smallest normal
    assert_true(isnan(fp8_decode(0x7f, FP8_E4M3)) && isnan(fp8_decode(0xff, FP8_E4M3)));
    assert_true(fp8_decode(0x7b, FP8_E5M2) == 57344.0f);
    assert_true(fp8_decode(0x01, FP8_E5M2) == ldexpf(1.0f, -16));
    assert_true(isinf(fp8_decode(0x7c, FP8_E5M2)) && fp8_decode(0xfc, FP8_E5M2) < 0);
    assert_true(isnan(fp8_decode(0x7d, FP8_E5M2)));
    assert_true(signbit(fp8_decode(0x80, FP8_E4M3)) && fp8_decode(0x80, FP8_E4M3) == 0.0f);
    // Decoding is monotonic over the positive finite codes.
    for (int f = 0; f < 2; f++)
        for (int c = 1; c < (f ? 0x7b : 0x7e); c++)
            assert_true(fp8_decode((uint8_t)c, (Fp8Format)f) < fp8_decode((uint8_t)(c + 1), (Fp8Format)f));
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_decode_values)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
