// Graded: exercise "swizzle" (exercises/swizzle.c).
//
// The 128-byte swizzle of reference/swizzle.h: each row keeps its bytes, a core matrix's eight
// rows fall in eight different bank groups, and the pattern is the one Hopper's TMA and
// wgmma use. Each test case is one point.
#include "reference/swizzle.h"
#include "tests/test_util.h"

// Shared memory has 32 banks of 4 bytes: a 16-byte chunk covers 4 banks, and the 8 chunk
// positions of a 128-byte line cover them all. Which group of 4 banks a chunk falls in:
static int bank_group(uint32_t offset) { return (int)(offset / 16) % 8; }

// Row r's eight chunks are a permutation of its own 128 bytes, 16-byte aligned.
static void test_rows_keep_their_bytes(void **state) {
    (void)state;
    for (int row = 0; row < 64; row++) {
        int seen = 0;
        for (int chunk = 0; chunk < 8; chunk++) {
            const uint32_t at = swizzle128_offset(row, chunk);
            assert_true(at % 16 == 0);
            assert_true(at >= (uint32_t)row * 128 && at < (uint32_t)row * 128 + 128);
            seen |= 1 << ((at - (uint32_t)row * 128) / 16);
        }
        assert_int_equal(seen, 0xff);
    }
}

// A core matrix: chunk k of 8 consecutive rows (an aligned group of 8), read together by the
// tensor cores - they must fall in 8 different bank groups.
static void test_core_matrices_are_conflict_free(void **state) {
    (void)state;
    for (int group = 0; group < 8; group++)
        for (int chunk = 0; chunk < 8; chunk++) {
            int seen = 0;
            for (int r = 0; r < 8; r++) seen |= 1 << bank_group(swizzle128_offset(8 * group + r, chunk));
            assert_int_equal(seen, 0xff);
        }
}

// The hardware's pattern (CU_TENSOR_MAP_SWIZZLE_128B, wgmma's swizzle mode 1): chunk k of row r
// at chunk k XOR (r mod 8) - any other conflict-free permutation would read the wrong data.
static void test_matches_hopper(void **state) {
    (void)state;
    for (int row = 0; row < 64; row++)
        for (int chunk = 0; chunk < 8; chunk++)
            assert_int_equal(swizzle128_offset(row, chunk), (uint32_t)(row * 128 + 16 * (chunk ^ (row % 8))));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows_keep_their_bytes),
        cmocka_unit_test(test_core_matrices_are_conflict_free),
        cmocka_unit_test(test_matches_hopper),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
