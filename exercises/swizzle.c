// EXERCISE "swizzle" (CPU, chapter 04; graded by tests/exercises/swizzle_test.c:
// tools/grade.sh swizzle).
//
// Read the declaration in reference/swizzle.h first (the header only: the solution is in the
// .c beside it). Write the byte offset of 16-byte chunk `chunk` (0..7) of row
// `row` in a panel of 128-byte rows stored with Hopper's 128-byte swizzle:
//   - every row keeps its own 128 bytes (row r starts at r * 128), only its chunks move;
//   - within each group of 8 consecutive rows, the 8 rows' chunk k must land in 8 different
//     chunk positions (that is what spreads a core matrix over all 32 banks);
//   - many permutations meet both rules (rotating row r's chunks by r mod 8 does), but only the
//     hardware's own one matches what the TMA writes and wgmma reads: a single bitwise
//     operation on k and on r's place in its group of 8. Chapter 04 shows it (section "Hopper:
//     wgmma, TMA, warp specialisation", the wgmma item).
// The graded tests check each of these. Once they pass, compare with swizzled_offset in
// kernels/attention/wgmma.cuh, the kernels' own copy (not before: it is the answer).
#include "reference/swizzle.h"

uint32_t swizzle128_offset(int row, int chunk) {
    (void)row, (void)chunk;
    return 0;  // TODO: your code here
}
