// The 128-byte swizzle: how Hopper's TMA writes, and its warpgroup MMA (wgmma) reads, a tile
// of 16-bit values in shared memory (chapter 04; the kernels' own copy is swizzled_offset in
// kernels/attention/wgmma.cuh, the TMA's is CU_TENSOR_MAP_SWIZZLE_128B).
//
// A tile is stored as panels of 64 columns: each row of a panel is 128 bytes, eight 16-byte
// chunks. Stored plainly (chunk k of row r at r * 128 + 16 k), the eight rows of one chunk
// column - what the tensor cores read together, an 8 x 8 "core matrix" - would sit 128 bytes
// apart, all in the same 4 of shared memory's 32 banks: an 8-way bank conflict. The swizzle
// moves chunk k of row r to another chunk of the same row, so that those eight rows use all
// 32 banks, while each row's eight chunks stay a permutation of its 128 bytes.
#ifndef REFERENCE_SWIZZLE_H
#define REFERENCE_SWIZZLE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Byte offset, from the panel's start, of 16-byte chunk `chunk` (0..7) of row `row` (>= 0).
uint32_t swizzle128_offset(int row, int chunk);

#ifdef __cplusplus
}
#endif

#endif  // REFERENCE_SWIZZLE_H
