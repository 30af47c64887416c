// EXERCISE "swizzle" (CPU, graded by tests/exercises: tools/grade.sh).
//
// Read reference/swizzle.h first. Write the byte offset of 16-byte chunk `chunk` (0..7) of row
// `row` in a panel of 128-byte rows stored with Hopper's 128-byte swizzle:
//   - every row keeps its own 128 bytes (row r starts at r * 128), only its chunks move;
//   - within each group of 8 consecutive rows, the 8 rows' chunk k must land in 8 different
//     chunk positions (that is what spreads a core matrix over all 32 banks);
//   - the hardware's choice, which the TMA writes and wgmma reads: chunk k of row r moves to
//     chunk k XOR (r mod 8).
// The graded tests check each of these. Then compare with swizzled_offset in
// kernels/attention/wgmma.cuh, the kernels' own copy.
#include "reference/swizzle.h"

uint32_t swizzle128_offset(int row, int chunk) {
    (void)row, (void)chunk;
    return 0;  // TODO: your code here
}
