// Tests of common/: Philox against its published known-answer vectors, fp16/bf16
// conversions, the layer's configuration checks.
#include <math.h>
#include <string.h>

#include "common/half.h"
#include "common/layer.h"
#include "common/philox.h"
#include "tests/test_util.h"

// Known-answer vectors of Philox4x32-10 from the Random123 distribution (kat_vectors).
static void test_philox_known_answers(void **state) {
    (void)state;
    Philox4 r = philox4x32_10(0, 0, 0);
    assert_int_equal(r.x[0], 0x6627e8d5u);
    assert_int_equal(r.x[1], 0xe169c58du);
    assert_int_equal(r.x[2], 0xbc57ac4cu);
    assert_int_equal(r.x[3], 0x9b00dbd8u);
    r = philox4x32_10(0xffffffffffffffffull, 0xffffffffffffffffull, 0xffffffffffffffffull);
    assert_int_equal(r.x[0], 0x408f276du);
    assert_int_equal(r.x[1], 0x41c83b0eu);
    assert_int_equal(r.x[2], 0xa20bc7c6u);
    assert_int_equal(r.x[3], 0x6d5451fdu);
    r = philox4x32_10(0x85a308d3243f6a88ull, 0x0370734413198a2eull, 0x299f31d0a4093822ull);
    assert_int_equal(r.x[0], 0xd16cfe09u);
    assert_int_equal(r.x[1], 0x94fdccebu);
    assert_int_equal(r.x[2], 0x5001e420u);
    assert_int_equal(r.x[3], 0x24126ea1u);
}

// Dropout keeps about 1 - p of the elements, and the mask depends on seed and offset.
static void test_dropout_keep_rate(void **state) {
    (void)state;
    const int n = 1 << 16;
    int kept = 0, same_other_offset = 0;
    for (int i = 0; i < n; i++) {
        int k = dropout_keep(42, 7, (uint64_t)i, 0.1f);
        kept += k;
        same_other_offset += k == dropout_keep(42, 8, (uint64_t)i, 0.1f);
    }
    double rate = (double)kept / n;
    assert_true(fabs(rate - 0.9) < 0.01);
    // Independent masks agree on about 0.9^2 + 0.1^2 = 82% of the elements, not all.
    assert_true(same_other_offset < n * 0.86 && same_other_offset > n * 0.78);
}

static void test_fp16_round_trip(void **state) {
    (void)state;
    // Every finite half converts to float and back unchanged.
    for (uint32_t h = 0; h < 0x10000u; h++) {
        if ((h & 0x7c00u) == 0x7c00u) continue;  // inf / NaN
        assert_int_equal(float_to_fp16(fp16_to_float((uint16_t)h)), h);
    }
    assert_int_equal(float_to_fp16(1.0f), 0x3c00);
    assert_int_equal(float_to_fp16(65504.0f), 0x7bff);
    assert_int_equal(float_to_fp16(65520.0f), 0x7c00);   // rounds up to inf
    assert_int_equal(float_to_fp16(1.0f + 1.0f / 2048), 0x3c00);  // tie: to even
    assert_int_equal(float_to_fp16(1.0f + 3.0f / 2048), 0x3c02);  // tie: to even (up)
    assert_int_equal(float_to_fp16(5.9604645e-8f), 0x0001);      // smallest subnormal
    assert_int_equal(float_to_fp16(2.9802322e-8f), 0x0000);      // half of it: tie to even (0)
    assert_int_equal(float_to_fp16(-2.0f), 0xc000);
    assert_true(isnan(fp16_to_float(float_to_fp16(NAN))));
}

static void test_bf16_rounding(void **state) {
    (void)state;
    for (uint32_t b = 0; b < 0x10000u; b++) {
        if ((b & 0x7f80u) == 0x7f80u) continue;
        assert_int_equal(float_to_bf16(bf16_to_float((uint16_t)b)), b);
    }
    assert_int_equal(float_to_bf16(1.0f), 0x3f80);
    assert_int_equal(float_to_bf16(1.0f + 1.0f / 256), 0x3f80);  // tie: to even
    assert_int_equal(float_to_bf16(1.0f + 3.0f / 256), 0x3f82);
}

static void test_config_problems(void **state) {
    (void)state;
    LayerConfig c = layer_config_quickstart();
    assert_null(layer_config_problem(&c));
    c.heads = 30;
    assert_non_null(strstr(layer_config_problem(&c), "divisible by heads"));
    c = layer_config_quickstart();
    c.attn_dropout = 1.0f;
    assert_non_null(layer_config_problem(&c));
    assert_false(layer_config_preset("nonsense", &c));
    assert_true(layer_config_preset("tiny", &c));
    assert_null(layer_config_problem(&c));
}

static void test_param_shapes(void **state) {
    (void)state;
    LayerConfig c = layer_config_quickstart();
    int64_t shape[2];
    assert_int_equal(param_shape(&c, P_QKV_WEIGHT, shape), 2);
    assert_int_equal(shape[0], 3 * 4096);
    assert_int_equal(shape[1], 4096);
    assert_int_equal(param_shape(&c, P_FC2_WEIGHT, shape), 2);
    assert_int_equal(shape[0], 4096);
    assert_int_equal(shape[1], 16384);
    assert_int_equal(param_numel(&c, P_FC1_BIAS), 16384);
    assert_string_equal(PARAM_NAMES[P_FC2_BIAS], "mlp.linear2.bias");
    // The quickstart's training step: 3 x (linear + attention) forward FLOPs.
    double t = 2048.0 * 4, h = 4096, f = 16384;
    double expect = 3 * (2 * t * h * (4 * h + 2 * f) + 4 * 4 * 2048.0 * 2048 * h);
    assert_true(fabs(layer_train_flops(&c) - expect) < 1e-6 * expect);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_philox_known_answers), cmocka_unit_test(test_dropout_keep_rate),
        cmocka_unit_test(test_fp16_round_trip),      cmocka_unit_test(test_bf16_rounding),
        cmocka_unit_test(test_config_problems),      cmocka_unit_test(test_param_shapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
