#include "reference/swizzle.h"

// Within each group of 8 rows (1024 bytes, the swizzle's period) chunk k of row r goes to
// chunk k XOR (r mod 8): row 0 keeps its order, row 1 swaps neighbours, ... so column k's
// eight rows land in eight different chunks, and each row's chunks are still all there.
uint32_t swizzle128_offset(int row, int chunk) {
    return (uint32_t)row * 128u + (uint32_t)((chunk ^ (row % 8)) * 16);
}
