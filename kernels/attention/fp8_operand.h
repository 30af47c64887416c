// Which lanes and bytes turn the FP8 forward's probabilities from the float score accumulator's
// layout into the e4m3 A operand's (kernels/attention/flash_forward_fp8.cu draws both layouts
// and explains the scheme): plain arithmetic on a lane index, shared by the kernel and by
// tests/attention/flash_fp8_test.c, which replays the scheme on the host for all 32 lanes and
// checks every byte lands where the A operand wants it. C and CUDA C++ alike.
#ifndef KERNELS_ATTENTION_FP8_OPERAND_H
#define KERNELS_ATTENTION_FP8_OPERAND_H

#include <stdint.h>

#ifdef __CUDACC__
#define FP8_OPERAND_FN static inline __host__ __device__
#else
#define FP8_OPERAND_FN static inline
#endif

// For lane (0..31) of a warp, c = lane % 4 its place in its quad:
//   src_first, src_second   the lanes it reads its two words from (same quad)
//   send_first, send_second byte selectors (__byte_perm) of the words it sends: from its
//                           words of rows g and g + 8, the halves of chunk j0 (even c) or j1
//                           (odd c) first, the other second
//   order_g, order_g8       byte selectors putting the two received words' pairs in key order,
//                           for row g and row g + 8
typedef struct {
    int src_first, src_second;
    uint32_t send_first, send_second, order_g, order_g8;
} Fp8OperandLanes;

FP8_OPERAND_FN Fp8OperandLanes fp8_operand_lanes(int lane) {
    const int c = lane % 4, quad = lane - c, odd = c & 1, upper = c >> 1;
    Fp8OperandLanes pl;
    pl.src_first = quad + 2 * odd + upper;
    pl.src_second = quad + 2 * odd + 1 - upper;
    // __byte_perm(x, y, s): result byte i = byte ((s >> 4 i) & 7) of {y:x} (x's bytes 0-3, y's 4-7).
    pl.send_first = odd ? 0x7632u : 0x5410u;  // odd: the high halves (chunk j1); even: the low (j0)
    pl.send_second = odd ? 0x5410u : 0x7632u;
    pl.order_g = upper ? 0x1054u : 0x5410u;   // row g: (x.lo, y.lo), or (y.lo, x.lo)
    pl.order_g8 = upper ? 0x3276u : 0x7632u;  // row g + 8: the high halves likewise
    return pl;
}

// CUDA's __byte_perm(x, y, s) in C (the selector's nibbles' bit 3, sign replication, unused).
FP8_OPERAND_FN uint32_t fp8_byte_perm(uint32_t x, uint32_t y, uint32_t s) {
    const uint64_t xy = ((uint64_t)y << 32) | x;
    uint32_t r = 0;
    for (int i = 0; i < 4; i++) r |= (uint32_t)((xy >> (8 * ((s >> (4 * i)) & 7))) & 0xff) << (8 * i);
    return r;
}

#endif  // KERNELS_ATTENTION_FP8_OPERAND_H
