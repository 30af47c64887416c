// Philox4x32-10: a counter-based random number generator (Salmon et al., SC'11).
//
// A counter-based RNG is a pure function: random = philox(counter, key). Nothing is
// carried from one draw to the next, so any thread can draw the number for any
// element directly. That is what lets the CPU reference reproduce the GPU's dropout
// masks bit for bit, and lets a fused kernel that visits elements in a different
// order (flash attention walks key blocks) draw exactly the same mask.
//
// Our convention for dropout (used by every step, CPU and GPU alike):
//   key     = the run's seed (64 bits)
//   counter = (element_index / 16 as 64 bits, offset as 64 bits)
//   byte    = byte element_index % 16 of the 16 bytes Philox returns (word k / 4, byte k % 4)
//   keep    = byte >= dropout_threshold(p) = round(256 p)
// where `offset` names the dropout site and training step (dropout_offset below) and
// `element_index` is the element's number: for hidden dropout its flat index into the [seq,
// batch, hidden] tensor; for attention probabilities the number attention_dropout_index()
// gives (query, key) of a head - a flat index with the keys of each 64-key block reordered
// the way the tensor-core kernels hold them (see "Attention's probabilities" below).
//
// One byte per element, as FlashAttention draws its masks: one Philox call (ten rounds of
// multiplies) serves 16 elements. With a 32-bit uniform per element it served 4, and inside
// the attention kernels - which draw a number for every one of the s^2 probabilities - the
// generator then cost as much time as the matrix products. The price: p is rounded to a
// multiple of 1/256 (0.1 becomes 26/256 = 0.1016), and kept elements are scaled by
// dropout_keep_scale(p) = 256 / (256 - threshold), which keeps the expectation exact.
//
// This header is plain C and CUDA at once: the same code runs on host and device.
#ifndef COMMON_CORE_PHILOX_H
#define COMMON_CORE_PHILOX_H

#include <stdint.h>

#if defined(__CUDACC__)
#define PHILOX_FN static __host__ __device__ __forceinline__
#else
#define PHILOX_FN static inline
#endif

typedef struct {
    uint32_t x[4];
} Philox4;

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

// 32 x 32 -> 64-bit product, split into its high and low words.
PHILOX_FN uint32_t philox_mulhilo(uint32_t a, uint32_t b, uint32_t *hi) {
#if defined(__CUDA_ARCH__)
    *hi = __umulhi(a, b);
    return a * b;
#else
    uint64_t p = (uint64_t)a * b;
    *hi = (uint32_t)(p >> 32);
    return (uint32_t)p;
#endif
}

// The round keys: round r mixes key + r * (W0, W1) into the state. They depend on the key
// alone, so a kernel that draws in its inner loop is handed them precomputed, as a kernel
// parameter: the GPU loads them once into uniform registers, which the XORs read, instead of
// every call adding them up again (a third of its instructions).
typedef struct {
    uint32_t lo[10], hi[10];
} PhiloxKeys;

PHILOX_FN PhiloxKeys philox_keys(uint64_t key) {
    PhiloxKeys k;
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    for (int round = 0; round < 10; round++) {
        k.lo[round] = k0;
        k.hi[round] = k1;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    return k;
}

// Ten rounds of the Philox bijection on a 128-bit counter under round keys from philox_keys.
PHILOX_FN Philox4 philox4x32_10_keyed(uint64_t counter_lo, uint64_t counter_hi, const PhiloxKeys *keys) {
    uint32_t c0 = (uint32_t)counter_lo, c1 = (uint32_t)(counter_lo >> 32);
    uint32_t c2 = (uint32_t)counter_hi, c3 = (uint32_t)(counter_hi >> 32);
    for (int round = 0; round < 10; round++) {
        uint32_t hi0, hi1;
        uint32_t lo0 = philox_mulhilo(PHILOX_M0, c0, &hi0);
        uint32_t lo1 = philox_mulhilo(PHILOX_M1, c2, &hi1);
        uint32_t n0 = hi1 ^ c1 ^ keys->lo[round];
        uint32_t n2 = hi0 ^ c3 ^ keys->hi[round];
        c0 = n0;
        c1 = lo1;
        c2 = n2;
        c3 = lo0;
    }
    Philox4 r = {{c0, c1, c2, c3}};
    return r;
}

// Ten rounds of the Philox bijection on a 128-bit counter under a 64-bit key.
PHILOX_FN Philox4 philox4x32_10(uint64_t counter_lo, uint64_t counter_hi, uint64_t key) {
    const PhiloxKeys keys = philox_keys(key);
    return philox4x32_10_keyed(counter_lo, counter_hi, &keys);
}

// A 32-bit random word to a float in [0, 1) with 24 random bits (exact in float).
PHILOX_FN float philox_to_unit_float(uint32_t bits) {
    return (float)(bits >> 8) * (1.0f / 16777216.0f);
}

// The dropout sites of the layer; each gets its own stream of masks.
enum { DROPOUT_SITE_ATTENTION = 0, DROPOUT_SITE_HIDDEN = 1, DROPOUT_NUM_SITES = 2 };

// The Philox offset of a dropout site at a given training step: every step and every
// site draws a fresh, independent mask.
PHILOX_FN uint64_t dropout_offset(uint64_t step, int site) {
    return step * DROPOUT_NUM_SITES + (uint64_t)site;
}

// Dropped iff an element's byte is below this: round(256 p), at most 255.
PHILOX_FN uint32_t dropout_threshold(float p) {
    float t = p * 256.0f + 0.5f;
    return t <= 0.0f ? 0u : t >= 255.0f ? 255u : (uint32_t)t;
}

// What kept elements are multiplied by: 1 / (1 - the drop probability actually used).
PHILOX_FN float dropout_keep_scale(float p) {
    return 256.0f / (float)(256u - dropout_threshold(p));
}

// The 16 random bytes of the group of 16 elements that holds `element_index`.
PHILOX_FN Philox4 dropout_random_bytes(uint64_t seed, uint64_t offset, uint64_t element_index) {
    return philox4x32_10(element_index >> 4, offset, seed);
}

// Byte k (0..15) of a group's random bytes.
PHILOX_FN uint32_t dropout_byte(Philox4 r, int k) {
    return (r.x[k >> 2] >> (8 * (k & 3))) & 0xffu;
}

// Is element `element_index` kept (1) or dropped (0) with drop probability p?
PHILOX_FN int dropout_keep(uint64_t seed, uint64_t offset, uint64_t element_index, float p) {
    Philox4 r = dropout_random_bytes(seed, offset, element_index);
    return dropout_byte(r, (int)(element_index & 15)) >= dropout_threshold(p);
}

// ---- Attention's probabilities ----------------------------------------------------------
//
// The fused attention kernels draw a mask for every one of the s^2 probabilities, so how the
// random bytes are spread over the threads decides what dropout costs there. Every
// tensor-core layout those kernels use (mma.sync's m16n8 accumulators and wgmma's alike)
// gives each thread, in each row it holds and each block of 64 keys, the 16 keys
//     64 kb + 8n + 2c + e      n = 0..7 (the 8-key column block), e = 0, 1
// where c = lane % 4. So attention's probabilities are numbered to make exactly those 16 one
// Philox group: the probability of query i and key j of head bh = batch * heads + head is
//     element_index = 16 group + 2n + e,  group = ((bh seq + i) key_blocks + kb) 4 + c
// with j = 64 kb + 8n + 2c + e and key_blocks = ceil(seq / 64). A thread draws its 16 bytes
// with one call and finds byte 2n + e where its n-th pair of keys needs it. (With the plain
// row-major number (bh seq + i) seq + j, a call's 16 bytes belonged to four lanes, which had
// to trade bits by shuffles: those and the bit juggling cost more than the generator.)
PHILOX_FN uint64_t attention_key_blocks(int seq) {
    return (uint64_t)(seq + 63) / 64;
}

// The Philox group (counter) of query i's keys [64 kb, 64 kb + 64) held by lanes with
// lane % 4 == quad.
PHILOX_FN uint64_t attention_dropout_group(uint64_t bh, int i, int key_block, int quad, int seq) {
    return (((bh * (uint64_t)seq + (uint64_t)i) * attention_key_blocks(seq) + (uint64_t)key_block) << 2) +
           (uint64_t)quad;
}

// The element index of probability (i, j) of head bh, for dropout_keep().
PHILOX_FN uint64_t attention_dropout_index(uint64_t bh, int i, int j, int seq) {
    const int in_block = j & 63;  // 8n + 2c + e
    const int n = in_block >> 3, quad = (in_block & 7) >> 1, e = in_block & 1;
    return attention_dropout_group(bh, i, j >> 6, quad, seq) * 16 + (uint64_t)(2 * n + e);
}

// Four keep decisions at once (SIMD within a register): bit 7 of byte k of the result is set
// iff byte k of `bytes` >= threshold (0..255); the other bits are junk. One subtraction
// compares the low 7 bits of every byte - each byte's top bit is set first, so no borrow
// crosses into the next byte - and the top bits decide the rest: byte >= threshold iff
// (its top bit, or low bits >= threshold's) when threshold < 128, (both) when >= 128.
PHILOX_FN uint32_t dropout_keep_flags4(uint32_t bytes, uint32_t threshold) {
    const uint32_t low_ge = (bytes | 0x80808080u) - (threshold & 0x7fu) * 0x01010101u;
    const uint32_t threshold_high = threshold & 0x80u ? 0xffffffffu : 0u;
    return (bytes & low_ge) | (~threshold_high & (bytes | low_ge));
}

// Masks from keep flags, built by one byte permute on the GPU (PTX prmt: a selector nibble
// with bit 3 set copies the top bit of the chosen byte into all 8 bits of the result byte).
PHILOX_FN uint32_t dropout_spread_flags(uint32_t flags4, uint32_t selector) {
#if defined(__CUDA_ARCH__)
    uint32_t r;
    asm("prmt.b32 %0, %1, 0, %2;" : "=r"(r) : "r"(flags4), "r"(selector));
    return r;
#else
    uint32_t r = 0;
    for (int k = 0; k < 4; k++) {
        const uint32_t byte = (selector >> (4 * k)) & 3u;  // our selectors read flags4 only
        r |= ((flags4 >> (8 * byte + 7)) & 1u ? 0xffu : 0u) << (8 * k);
    }
    return r;
#endif
}

// The AND-mask of a pair of 16-bit values packed in one word, from the flags of bytes b
// (low half) and b + 1 (high half) of a flags word, b = 0 or 2: 0xffff where kept.
PHILOX_FN uint32_t dropout_pair_mask(uint32_t flags4, int b) {
    return dropout_spread_flags(flags4, b ? 0xbbaau : 0x9988u);
}

// The AND-mask of one 32-bit value from the flag of byte b (0..3): all ones where kept.
PHILOX_FN uint32_t dropout_word_mask(uint32_t flags4, int b) {
    return dropout_spread_flags(flags4, 0x8888u + (uint32_t)b * 0x1111u);
}

#endif  // COMMON_CORE_PHILOX_H
