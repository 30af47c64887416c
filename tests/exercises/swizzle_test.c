// Graded: exercise "swizzle" (exercises/swizzle.c).
//
// The 128-byte swizzle of reference/swizzle.h: each row keeps its bytes, a core matrix's eight
// rows fall in eight different bank groups, and the pattern is the one Hopper's TMA and
// wgmma use. Each test case is one point.
#include "reference/swizzle.h"
#include "tests/exercises/grading.h"
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
            expect_true(at % 16 == 0, "swizzle128_offset(row %d, chunk %d) = %u is not a multiple of 16: chunks are "
                        "16-byte units", row, chunk, at);
            expect_true(at >= (uint32_t)row * 128 && at < (uint32_t)row * 128 + 128,
                        "swizzle128_offset(row %d, chunk %d) = %u is outside row %d's own bytes [%d, %d)", row, chunk,
                        at, row, row * 128, row * 128 + 128);
            const int moved_to = (int)((at - (uint32_t)row * 128) / 16);
            expect_true(!(seen & (1 << moved_to)), "row %d: chunk %d lands on chunk position %d, which an earlier "
                        "chunk of the row already took", row, chunk, moved_to);
            seen |= 1 << moved_to;
        }
    }
}

// A core matrix: chunk k of 8 consecutive rows (an aligned group of 8), read together by the
// tensor cores - they must fall in 8 different bank groups.
static void test_core_matrices_are_conflict_free(void **state) {
    (void)state;
    for (int group = 0; group < 8; group++)
        for (int chunk = 0; chunk < 8; chunk++) {
            int seen = 0;
            for (int r = 0; r < 8; r++) {
                const int row = 8 * group + r, bank = bank_group(swizzle128_offset(row, chunk));
                expect_true(!(seen & (1 << bank)), "chunk %d of rows %d..%d (one core matrix): row %d's lands in bank "
                            "group %d like an earlier row's - a bank conflict", chunk, 8 * group, 8 * group + 7, row,
                            bank);
                seen |= 1 << bank;
            }
        }
}

// The hardware's pattern (CU_TENSOR_MAP_SWIZZLE_128B, wgmma's swizzle mode 1): chunk k of row r
// at chunk k XOR (r mod 8) - any other conflict-free permutation would read the wrong data.
static void test_matches_hopper(void **state) {
    (void)state;
    for (int row = 0; row < 64; row++)
        for (int chunk = 0; chunk < 8; chunk++)
            expect_int_eq(swizzle128_offset(row, chunk), (uint32_t)(row * 128 + 16 * (chunk ^ (row % 8))),
                          "swizzle128_offset(row %d, chunk %d), Hopper's pattern", row, chunk);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows_keep_their_bytes),
        cmocka_unit_test(test_core_matrices_are_conflict_free),
        cmocka_unit_test(test_matches_hopper),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
