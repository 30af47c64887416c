// Tests of common/: Philox against its published known-answer vectors, fp16/bf16
// conversions, the layer's configuration checks.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/half.h"
#include "common/core/layer.h"
#include "common/core/philox.h"
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

// Attention's numbering (common/core/philox.h) is one-to-one: no two probabilities of any head
// share a random byte, at sequence lengths that fill their last 64-key block and ones that don't.
static void test_attention_dropout_index_is_one_to_one(void **state) {
    (void)state;
    const int seqs[] = {1, 7, 64, 65, 130, 200};
    for (size_t t = 0; t < sizeof seqs / sizeof seqs[0]; t++) {
        const int seq = seqs[t], heads = 3;
        const uint64_t per_head = (uint64_t)seq * attention_key_blocks(seq) * 64;  // bytes of a head
        unsigned char *seen = calloc((size_t)per_head * heads, 1);
        for (int bh = 0; bh < heads; bh++)
            for (int i = 0; i < seq; i++)
                for (int j = 0; j < seq; j++) {
                    const uint64_t index = attention_dropout_index((uint64_t)bh, i, j, seq);
                    assert_true(index < per_head * heads);
                    assert_int_equal(seen[index], 0);
                    seen[index] = 1;
                    // The 16 bytes of a group are 16 keys of one row and one 64-key block.
                    assert_true(index / 16 == attention_dropout_group((uint64_t)bh, i, j / 64, (j % 8) / 2, seq));
                }
        free(seen);
    }
}

// The four-at-a-time keep test (dropout_keep_flags4) agrees with byte >= threshold for every
// threshold and every byte value, in each of the four positions, whatever the other bytes.
static void test_dropout_keep_flags4(void **state) {
    (void)state;
    uint64_t filler = 0x9e3779b97f4a7c15ull;
    for (uint32_t threshold = 0; threshold < 256; threshold++)
        for (uint32_t byte = 0; byte < 256; byte++)
            for (int k = 0; k < 4; k++) {
                filler = filler * 6364136223846793005ull + 1442695040888963407ull;
                const uint32_t others = (uint32_t)(filler >> 32) & ~(0xffu << (8 * k));
                const uint32_t flags = dropout_keep_flags4(others | byte << (8 * k), threshold);
                assert_int_equal((flags >> (8 * k + 7)) & 1u, byte >= threshold);
            }
}

// What a fused attention kernel's thread does (kernels/attention/flash_common.cuh,
// TileDropout) - one Philox call per row of a 64-key block, flags four bytes at a time, masks
// by byte permutes - done here for every lane of a warp: each lane's masks must be
// dropout_keep() of the probabilities it holds (rows g, g + 8; keys 8n + 2c + e).
static void test_attention_dropout_lane_masks(void **state) {
    (void)state;
    const int seq = 200, key_block = 2, first_row = 16;
    const uint64_t bh = 5, seed = 77, offset = 3;
    const float ps[] = {0.1f, 0.5f, 0.7f};  // thresholds 26, 128, 179: both branches of the test
    for (size_t t = 0; t < sizeof ps / sizeof ps[0]; t++) {
        const float p = ps[t];
        const uint32_t threshold = dropout_threshold(p);
        for (int lane = 0; lane < 32; lane++) {
            const int g = lane / 4, c = lane % 4;
            for (int r = 0; r < 2; r++) {
                const int i = first_row + g + 8 * r;
                const Philox4 bytes =
                    philox4x32_10(attention_dropout_group(bh, i, 0, c, seq) + 4 * (uint64_t)key_block, offset, seed);
                for (int n = 0; n < 8; n++) {
                    const uint32_t flags = dropout_keep_flags4(bytes.x[n >> 1], threshold);
                    const uint32_t pair = dropout_pair_mask(flags, 2 * (n & 1));
                    for (int e = 0; e < 2; e++) {
                        const int j = 64 * key_block + 8 * n + 2 * c + e;
                        const int keep = dropout_keep(seed, offset, attention_dropout_index(bh, i, j, seq), p);
                        assert_int_equal((pair >> (16 * e)) & 0xffffu, keep ? 0xffffu : 0u);
                        assert_int_equal(dropout_word_mask(flags, 2 * (n & 1) + e), keep ? 0xffffffffu : 0u);
                    }
                }
            }
        }
    }
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

// Dropout runs at round(256 p) / 256: a probability that this moves by more than 5% (drop or
// keep probability) is refused, and the message offers the multiples of 1/256 around it.
static void test_dropout_representable(void **state) {
    (void)state;
    assert_true(dropout_used(0.1f) == 26.0 / 256.0);
    assert_true(dropout_used(0.5f) == 0.5);
    assert_null(dropout_problem(0.0f));
    assert_null(dropout_problem(0.1f));    // 1.6% more drops
    assert_null(dropout_problem(0.2f));
    assert_null(dropout_problem(3.0f / 256.0f));
    assert_non_null(dropout_problem(0.001f));  // would be 0: no dropout at all
    assert_non_null(dropout_problem(0.999f));  // would keep 3.9x as many
    assert_non_null(dropout_problem(0.01f));   // 3/256: 17% more drops
    assert_non_null(dropout_problem(1.0f));
    assert_non_null(dropout_problem(-0.1f));
    assert_non_null(strstr(dropout_problem(0.001f), "the smallest is 1/256"));
    assert_non_null(strstr(dropout_problem(0.01f), "e.g. 2/256 = 0.0078125 or 3/256 = 0.011719"));
    LayerConfig c;
    layer_config_preset("tiny", &c);
    c.hidden_dropout = 0.001f;
    assert_non_null(strstr(layer_config_problem(&c), "dropout: probability 0.001 cannot be used"));
}

// The first value a dtype cannot hold (rounds to an infinity, or is not finite).
static void test_values_outside_dtype(void **state) {
    (void)state;
    float x[6] = {1.0f, -65504.0f, 65519.0f, 65520.0f, 1e6f, 2.0f};
    assert_int_equal(first_value_outside_dtype(x, 3, DTYPE_FP16), -1);
    assert_int_equal(first_value_outside_dtype(x, 6, DTYPE_FP16), 3);  // 65520 rounds to inf
    assert_int_equal(first_value_outside_dtype(x, 6, DTYPE_BF16), -1);
    x[5] = NAN;
    assert_int_equal(first_value_outside_dtype(x, 6, DTYPE_BF16), 5);
    float big = 3.4e38f;
    assert_int_equal(first_value_outside_dtype(&big, 1, DTYPE_BF16), 0);
    assert_true(dtype_max(DTYPE_FP16) == 65504.0);
}

// seq * batch above 2^31 - 1 is refused with the product; the host-memory estimate grows.
static void test_size_limits(void **state) {
    (void)state;
    LayerConfig c;
    layer_config_preset("tiny", &c);
    c.seq = 1 << 20, c.batch = 1 << 16;
    assert_non_null(strstr(layer_config_problem(&c), "68719476736 tokens"));
    c.seq = 16, c.batch = 2;
    const double tiny = layer_host_bytes(&c, 0);
    assert_true(tiny > 4.0 * 3 * 128 * 128);  // at least the QKV weight, in float
    assert_true(layer_host_bytes(&c, 1) > tiny);
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
        cmocka_unit_test(test_attention_dropout_index_is_one_to_one), cmocka_unit_test(test_dropout_keep_flags4),
        cmocka_unit_test(test_attention_dropout_lane_masks),
        cmocka_unit_test(test_fp16_round_trip),      cmocka_unit_test(test_bf16_rounding),
        cmocka_unit_test(test_config_problems),      cmocka_unit_test(test_param_shapes),
        cmocka_unit_test(test_dropout_representable), cmocka_unit_test(test_values_outside_dtype),
        cmocka_unit_test(test_size_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
