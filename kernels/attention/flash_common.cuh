// What the flash-attention kernels share (flash_attention.cu's mma.sync kernels and
// flash_forward_wgmma.cu's Hopper forward): where a head's q, k, v live, the dropout mask
// drawn in registers, and the online-softmax step over one tile of scores.
#ifndef KERNELS_ATTENTION_FLASH_COMMON_CUH
#define KERNELS_ATTENTION_FLASH_COMMON_CUH

#include <math.h>
#include <stdint.h>

#include "common/philox.h"
#include "kernels/attention/mma.cuh"


static const float LOG2E = 1.4426950408889634f;

// Where head (b, h)'s q, k or v vector of token i starts, in the fused QKV tensor.
struct QkvView {
    int64_t token_stride;  // batch * heads * 3d
    int64_t head_offset;   // (b * heads + h) * 3d
    __device__ __forceinline__ int64_t at(int i, int part, int d) const {
        return (int64_t)i * token_stride + head_offset + (int64_t)part * d;
    }
};

// Which heads of the whole layer this call computes, for the dropout mask only: the mask of
// head h of batch b is keyed by its index in the unsharded layer, (b * total + first + h),
// so that a tensor-parallel rank holding heads [first, first + heads) draws the same mask as
// one GPU holding them all (step 07). Unsharded: total = heads, first = 0.
struct HeadRange {
    int total, first;
    __device__ __forceinline__ uint64_t global_bh(int b, int h) const {
        return (uint64_t)b * total + first + h;
    }
};

// Which of the probabilities this thread holds in a 16 x 64 tile are kept by dropout: rows g
// and g + 8 (r = 0, 1), n-blocks n = 0..7, columns 2c and 2c + 1 of each; bit 2n + e of
// keep[r] for column 2c + e of n-block n. (Bits, not factors: 2 registers instead of 32,
// which the forward's two m-tiles cannot spare.) row_index[r] is ((b * heads + h) * seq + i)
// * seq for the row's query i; col0 is the tile's first key.
//
// One Philox call gives the random bytes of 16 consecutive elements (common/philox.h). When
// seq is a multiple of 16 the groups line up with the tile's columns: the 4 lanes of a quad,
// which between them hold rows g and g + 8 of all 64 columns, each draw one row's 32
// consecutive columns (2 calls per lane per tile) and swap the 32-bit masks by shuffles.
__device__ __forceinline__ void dropout_tile_keep_bits(uint32_t (&keep)[2], const uint64_t (&row_index)[2],
                                                       int col0, int seq, uint64_t seed, uint64_t offset, float p) {
    const int lane = threadIdx.x % 32, c = lane % 4;
    const uint32_t threshold = dropout_threshold(p);
    keep[0] = keep[1] = 0;
    if (seq % 16 == 0) {
        const int my_row = c >> 1, my_half = c & 1;  // this lane draws columns [32 my_half, +32) of a row
        const uint64_t start = row_index[my_row] + (uint64_t)col0 + 32 * my_half;
        // Four bytes are compared at once (__vcmpgeu4: 0xff where byte >= threshold) and their
        // flags gathered into four bits by one multiply: flag k sits at bit 8k, and * 0x01020408
        // moves bits 0, 8, 16, 24 to 24, 25, 26, 27 without carries. (Sixteen separate
        // compares per Philox call cost about as much as the call itself.)
        const uint32_t threshold4 = threshold * 0x01010101u;
        uint32_t word = 0;  // bit b: column 32 my_half + b
#pragma unroll
        for (int group = 0; group < 2; group++) {
            const Philox4 r = dropout_random_bytes(seed, offset, start + 16 * group);
#pragma unroll
            for (int q = 0; q < 4; q++) {  // bytes 4q .. 4q + 3 of the group: word q of the call
                const uint32_t flags = __vcmpgeu4(r.x[q], threshold4) & 0x01010101u;
                word |= ((flags * 0x01020408u) >> 24) << (16 * group + 4 * q);
            }
        }
        const int quad = lane & ~3;
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const uint32_t half[2] = {__shfl_sync(0xffffffffu, word, quad | (r << 1)),
                                      __shfl_sync(0xffffffffu, word, quad | (r << 1) | 1)};
#pragma unroll
            for (int n = 0; n < 8; n++)  // columns 8n + 2c, 8n + 2c + 1
                keep[r] |= ((half[n >> 2] >> ((8 * n + 2 * c) & 31)) & 3u) << (2 * n);
        }
    } else {  // groups straddle the tiles: one call per element (ragged seq only)
#pragma unroll
        for (int r = 0; r < 2; r++)
#pragma unroll
            for (int n = 0; n < 8; n++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    int j = col0 + n * 8 + 2 * c + e;
                    uint64_t index = row_index[r] + (uint64_t)(j < seq ? j : 0);
                    const Philox4 g = dropout_random_bytes(seed, offset, index);
                    keep[r] |= (uint32_t)(dropout_byte(g, (int)(index & 15)) >= threshold) << (2 * n + e);
                }
    }
}

// The dropout factor (0 or dropout_keep_scale(p)) of row r, n-block n, column 2c + e.
__device__ __forceinline__ float dropout_factor(const uint32_t (&keep)[2], int r, int n, int e, float keep_scale) {
    return (keep[r] >> (2 * n + e)) & 1u ? keep_scale : 0.0f;
}

// The online-softmax step for one warp's 16 rows of a tile of NB * 8 keys starting at key
// k0: s holds the scores as fragments (mma.sync's or wgmma's accumulator layout, which agree
// per warp); m and l the running max (log2 domain) and sum of rows g and g + 8. Turns s into
// the probabilities to multiply with V (dropout applied) and returns in alpha the factor by
// which the output accumulated so far must be rescaled (rescale_output).
template <int NB>
__device__ __forceinline__ void online_softmax_step(float (&s)[NB][4], float (&m)[2], float (&l)[2],
                                                    float (&alpha)[2], const int (&row_i)[2], int k0, int seq,
                                                    int causal, float scale_log2, float p_drop, float keep_scale,
                                                    uint64_t drop_bh, uint64_t seed, uint64_t offset) {
    const int lane = threadIdx.x % 32, c2 = (lane % 4) * 2;
    // Scale into the log2 domain, mask, and update the running max and sum. Only tiles that
    // reach past seq, or past this thread's first row when causal, need the mask (most don't).
    float tile_max[2] = {-INFINITY, -INFINITY};
    const bool needs_mask = k0 + NB * 8 > seq || (causal && k0 + NB * 8 - 1 > row_i[0]);
    if (needs_mask) {
#pragma unroll
        for (int n = 0; n < NB; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int j = k0 + n * 8 + c2 + (e & 1), i = row_i[e / 2];
                float v = s[n][e] * scale_log2;
                if (j >= seq || (causal && j > i)) v = -INFINITY;
                s[n][e] = v;
                tile_max[e / 2] = fmaxf(tile_max[e / 2], v);
            }
    } else {
#pragma unroll
        for (int n = 0; n < NB; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                s[n][e] *= scale_log2;
                tile_max[e / 2] = fmaxf(tile_max[e / 2], s[n][e]);
            }
    }
    float m_use[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
        tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
        float m_new = fmaxf(m[r], tile_max[r]);
        m_use[r] = m_new == -INFINITY ? 0.0f : m_new;  // a fully masked row so far: exp2(-inf) = 0
        alpha[r] = exp2f(m[r] - m_use[r]);
        m[r] = m_new;
    }
    float row_sum[2] = {0.0f, 0.0f};
#pragma unroll
    for (int n = 0; n < NB; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            float p = exp2f(s[n][e] - m_use[e / 2]);
            s[n][e] = p;
            row_sum[e / 2] += p;
        }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 1);
        row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 2);
        l[r] = l[r] * alpha[r] + row_sum[r];  // the normaliser counts dropped keys too
    }
    if (p_drop > 0.0f) {  // one 16 x 64 mask tile at a time
        const uint64_t row_index[2] = {(drop_bh * seq + min(row_i[0], seq - 1)) * seq,
                                       (drop_bh * seq + min(row_i[1], seq - 1)) * seq};
#pragma unroll
        for (int part = 0; part < NB / 8; part++) {
            uint32_t keep[2];
            dropout_tile_keep_bits(keep, row_index, k0 + 64 * part, seq, seed, offset, p_drop);
#pragma unroll
            for (int n = 0; n < 8; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) s[8 * part + n][e] *= dropout_factor(keep, e / 2, n, e & 1, keep_scale);
        }
    }
}

// o (rows g and g + 8 of NB * 8 output columns) *= alpha of its row.
template <int NB>
__device__ __forceinline__ void rescale_output(float (&o)[NB][4], const float (&alpha)[2]) {
#pragma unroll
    for (int n = 0; n < NB; n++) {
        o[n][0] *= alpha[0], o[n][1] *= alpha[0];
        o[n][2] *= alpha[1], o[n][3] *= alpha[1];
    }
}

// The forward's last act for one warp's rows g and g + 8 (query indices row_i): ctx = O / l
// (the row of token i starts at i * token_stride + head_offset), and the logsumexp
// ln(sum exp(scaled scores)) = (m + log2 l) ln 2 at lse[i].
template <typename T, int NB>
__device__ __forceinline__ void write_output_rows(T *ctx, float *lse, const float (&o)[NB][4], const float (&m)[2],
                                                  const float (&l)[2], const int (&row_i)[2], int seq,
                                                  int64_t token_stride, int64_t head_offset) {
    const int lane = threadIdx.x % 32, c2 = (lane % 4) * 2;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int i = row_i[r];
        if (i >= seq) continue;
        const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
        T *out = ctx + (int64_t)i * token_stride + head_offset;
#pragma unroll
        for (int n = 0; n < NB; n++)
            *reinterpret_cast<uint32_t *>(out + n * 8 + c2) = pack2<T>(o[n][2 * r] * inv, o[n][2 * r + 1] * inv);
        if (lane % 4 == 0) lse[i] = l[r] > 0.0f ? (m[r] + log2f(l[r])) / LOG2E : -INFINITY;
    }
}

// The backward's last act for one warp's rows g and g + 8 of dK and dV (key indices
// j_first and j_first + 8): dK * scale and dV into dqkv's k and v slots of those keys.
template <typename T, int NB>
__device__ __forceinline__ void write_dk_dv_rows(T *dqkv, const QkvView &view, const float (&dk)[NB][4],
                                                 const float (&dv)[NB][4], int j_first, int seq, float scale) {
    const int c2 = (threadIdx.x % 4) * 2;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int j = j_first + 8 * r;
        if (j >= seq) continue;
        T *dkp = dqkv + view.at(j, 1, NB * 8), *dvp = dqkv + view.at(j, 2, NB * 8);
#pragma unroll
        for (int n = 0; n < NB; n++) {
            *reinterpret_cast<uint32_t *>(dkp + n * 8 + c2) = pack2<T>(dk[n][2 * r] * scale, dk[n][2 * r + 1] * scale);
            *reinterpret_cast<uint32_t *>(dvp + n * 8 + c2) = pack2<T>(dv[n][2 * r], dv[n][2 * r + 1]);
        }
    }
}

// Everything a forward launch needs: q, k, v read from qkv (token stride batch * qkv_row, see
// flash_attention.h), ctx written with token stride batch * ctx_row, lse [batch, heads, seq].
struct FwdArgs {
    const void *qkv;
    void *ctx;
    float *lse;
    int seq, batch, heads;
    int64_t qkv_row, ctx_row;
    float p_drop;
    int causal;
    uint64_t seed, offset;
    HeadRange drop;
};

// Hopper's forward kernel (flash_forward_wgmma.cu), for T = __half or __nv_bfloat16, D = 64 or 128.
template <typename T, int D>
void flash_forward_wgmma(const FwdArgs &a);

// A backward launch: q, k, v from qkv and dO from dctx as in the forward, lse from the
// forward, dsum = rowsum(dO * O) per query, dq_accum the (zeroed) float accumulator of dQ;
// writes dK and dV into dqkv (its dQ part is left to the caller).
struct BwdArgs {
    const void *qkv, *dctx;
    const float *lse, *dsum;
    float *dq_accum;
    void *dqkv;
    int seq, batch, heads;
    int64_t qkv_row, ctx_row;
    float p_drop;
    int causal;
    uint64_t seed, offset;
    HeadRange drop;
};

// Hopper's backward kernel (flash_backward_wgmma.cu), for head dim 128.
template <typename T>
void flash_backward_wgmma_d128(const BwdArgs &a);

#endif  // KERNELS_ATTENTION_FLASH_COMMON_CUH
