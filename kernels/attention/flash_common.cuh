// What the flash-attention kernels share (flash_mma.cu's mma.sync kernels and the Hopper
// ones, flash_forward_wgmma.cu, flash_backward_wgmma.cu): where a head's q, k, v live, the
// dropout mask drawn in registers, and the online-softmax step over one tile of scores.
#ifndef KERNELS_ATTENTION_FLASH_COMMON_CUH
#define KERNELS_ATTENTION_FLASH_COMMON_CUH

#include <math.h>
#include <stdint.h>

#include "common/core/philox.h"
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

// The dropout mask of the probabilities this thread holds in a 16 x 64 tile: rows g and
// g + 8 (r = 0, 1), keys 8n + 2c + e of the tile (n = 0..7, e = 0, 1). common/core/philox.h numbers
// attention's probabilities so that those 16 keys of a row are one Philox group: one call per
// row, and its bytes turned into keep flags four at a time (dropout_keep_flags4). The masks
// are then applied as bit masks - to probabilities packed as 16-bit pairs (pair_mask) or to
// one float (element_mask) - and the factor 1 / (1 - p) is left to the end (the kernels scale
// O, and dV, once), so dropping costs one AND per pair instead of a select and a multiply per
// value.
struct RowDropout {
    uint32_t flags[4];  // bit 7 of byte 2n + e of the 16 (word n / 2): key 8n + 2c + e is kept

    __device__ __forceinline__ uint32_t pair_mask(int n) const {  // keys 8n + 2c, + 1
        return dropout_pair_mask(flags[n >> 1], 2 * (n & 1));
    }
    __device__ __forceinline__ uint32_t element_mask(int n, int e) const {  // key 8n + 2c + e
        return dropout_word_mask(flags[n >> 1], 2 * (n & 1) + e);
    }
};

// The Philox group of this thread's keys of query i in key block 0 (attention_dropout_group,
// common/core/philox.h); key block kb's group is 4 kb further.
__device__ __forceinline__ uint64_t dropout_row_group(uint64_t global_bh, int i, int seq) {
    return attention_dropout_group(global_bh, i, 0, threadIdx.x % 4, seq);
}

// The mask of key block kb (keys [64 kb, 64 kb + 64)) of the row whose group is row_group.
__device__ __forceinline__ RowDropout row_dropout(uint64_t row_group, int key_block, const PhiloxKeys &keys,
                                                  uint64_t offset, uint32_t threshold) {
    RowDropout d;
    const Philox4 bytes = philox4x32_10_keyed(row_group + 4 * (uint64_t)key_block, offset, &keys);
#pragma unroll
    for (int w = 0; w < 4; w++) d.flags[w] = dropout_keep_flags4(bytes.x[w], threshold);
    return d;
}

// Both rows' (g and g + 8) masks of a 16 x 64 tile.
struct TileDropout {
    RowDropout row[2];
};

__device__ __forceinline__ TileDropout tile_dropout(const uint64_t (&row_group)[2], int key_block,
                                                    const PhiloxKeys &keys, uint64_t offset, uint32_t threshold) {
    return {{row_dropout(row_group[0], key_block, keys, offset, threshold),
             row_dropout(row_group[1], key_block, keys, offset, threshold)}};
}

// Dropout on k-step kk (keys 16 kk .. 16 kk + 15 of the tile) of P as an A fragment of the
// m16n8k16 / wgmma layout: registers 0, 1 hold n-block 2 kk of rows g, g + 8; 2, 3 n-block 2 kk + 1.
__device__ __forceinline__ void drop_a_fragment(uint32_t (&a)[4], const TileDropout &d, int kk) {
    a[0] &= d.row[0].pair_mask(2 * kk);
    a[1] &= d.row[1].pair_mask(2 * kk);
    a[2] &= d.row[0].pair_mask(2 * kk + 1);
    a[3] &= d.row[1].pair_mask(2 * kk + 1);
}

// A float with its bits ANDed with a mask: itself or +0.
__device__ __forceinline__ float masked(float x, uint32_t mask) {
    return __uint_as_float(__float_as_uint(x) & mask);
}

// 2^x by the special-function unit alone (PTX ex2.approx.ftz). exp2f adds, for results that
// would be denormal, a compare and two predicated multiplies to every call - three issue slots
// per probability, in kernels whose softmax competes with the tensor cores for issue slots -
// and buys nothing here: a probability below 2^-126 of the row's largest is zero to a 16-bit
// P and to the row's sum alike. (FlashAttention gets the same by compiling with fast math.)
__device__ __forceinline__ float exp2_approx(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// The online-softmax step for one warp's 16 rows of a tile of NB * 8 keys starting at key
// k0: s holds the scores as fragments (mma.sync's or wgmma's accumulator layout, which agree
// per warp); m and l the running max (log2 domain) and sum of rows g and g + 8. Turns s into
// the (not yet dropped) probabilities exp(s - m) and returns in alpha the factor by which the
// output accumulated so far must be rescaled (rescale_output). Dropout comes after, on the
// packed probabilities: the normaliser l counts dropped keys too.
// P_LOG2_SCALE (0 for the 16-bit kernels): the probabilities come out multiplied by
// 2^P_LOG2_SCALE (the FP8 forward's 2^8, attention_fp8.h), for free - the exponent subtracts
// m - P_LOG2_SCALE instead of m; m stays the true running max, l sums the scaled
// probabilities. At 0 the subtraction is compiled out (if constexpr), so the 16-bit kernels'
// code is what it was before the parameter existed.
template <int NB, int P_LOG2_SCALE = 0>
__device__ __forceinline__ void online_softmax_step(float (&s)[NB][4], float (&m)[2], float (&l)[2],
                                                    float (&alpha)[2], const int (&row_i)[2], int k0, int seq,
                                                    int causal, float scale_log2) {
    const int lane = threadIdx.x % 32, c2 = (lane % 4) * 2;
    // Mask, and find the tile's row maxima. Only tiles that reach past seq, or past this
    // thread's first row when causal, need the mask (most don't). The scale (> 0, so it keeps
    // the order) is applied to the maxima here and to each score inside the exponent's FFMA
    // below: one instruction per score fewer than scaling the scores first.
    float tile_max[2] = {-INFINITY, -INFINITY};
    const bool needs_mask = k0 + NB * 8 > seq || (causal && k0 + NB * 8 - 1 > row_i[0]);
    if (needs_mask) {
#pragma unroll
        for (int n = 0; n < NB; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int j = k0 + n * 8 + c2 + (e & 1), i = row_i[e / 2];
                if (j >= seq || (causal && j > i)) s[n][e] = -INFINITY;
            }
    }
#pragma unroll
    for (int n = 0; n < NB; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) tile_max[e / 2] = fmaxf(tile_max[e / 2], s[n][e]);
    float m_use[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
        tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
        float m_new = fmaxf(m[r], tile_max[r] * scale_log2);
        m_use[r] = m_new == -INFINITY ? 0.0f : m_new;  // a fully masked row so far: exp2(-inf) = 0
        alpha[r] = exp2_approx(m[r] - m_use[r]);
        m[r] = m_new;
        if constexpr (P_LOG2_SCALE != 0) m_use[r] -= (float)P_LOG2_SCALE;  // the exponent's shift from here on
    }
    float row_sum[2] = {0.0f, 0.0f};
#pragma unroll
    for (int n = 0; n < NB; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            float p = exp2_approx(fmaf(s[n][e], scale_log2, -m_use[e / 2]));
            s[n][e] = p;
            row_sum[e / 2] += p;
        }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 1);
        row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 2);
        l[r] = l[r] * alpha[r] + row_sum[r];
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
// times out_scale (dropout's 1 / (1 - p), which the kept probabilities were not multiplied by)
// (the row of token i starts at i * token_stride + head_offset), and the logsumexp
// ln(sum exp(scaled scores)) = (m + log2 l) ln 2 at lse[i].
template <typename T, int NB>
__device__ __forceinline__ void write_output_rows(T *ctx, float *lse, const float (&o)[NB][4], const float (&m)[2],
                                                  const float (&l)[2], const int (&row_i)[2], int seq,
                                                  int64_t token_stride, int64_t head_offset, float out_scale) {
    const int lane = threadIdx.x % 32, c2 = (lane % 4) * 2;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int i = row_i[r];
        if (i >= seq) continue;
        const float inv = l[r] > 0.0f ? out_scale / l[r] : 0.0f;
        T *out = ctx + (int64_t)i * token_stride + head_offset;
#pragma unroll
        for (int n = 0; n < NB; n++)
            *reinterpret_cast<uint32_t *>(out + n * 8 + c2) = pack2<T>(o[n][2 * r] * inv, o[n][2 * r + 1] * inv);
        if (lane % 4 == 0) lse[i] = l[r] > 0.0f ? (m[r] + log2f(l[r])) / LOG2E : -INFINITY;
    }
}

// The backward's last act for one warp's rows g and g + 8 of dK and dV (key indices
// j_first and j_first + 8): dK * dk_scale and dV * dv_scale (dropout's 1 / (1 - p), which the
// kept probabilities were not multiplied by) into dqkv's k and v slots of those keys.
template <typename T, int NB>
__device__ __forceinline__ void write_dk_dv_rows(T *dqkv, const QkvView &view, const float (&dk)[NB][4],
                                                 const float (&dv)[NB][4], int j_first, int seq, float dk_scale,
                                                 float dv_scale) {
    const int c2 = (threadIdx.x % 4) * 2;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int j = j_first + 8 * r;
        if (j >= seq) continue;
        T *dkp = dqkv + view.at(j, 1, NB * 8), *dvp = dqkv + view.at(j, 2, NB * 8);
#pragma unroll
        for (int n = 0; n < NB; n++) {
            *reinterpret_cast<uint32_t *>(dkp + n * 8 + c2) = pack2<T>(dk[n][2 * r] * dk_scale, dk[n][2 * r + 1] * dk_scale);
            *reinterpret_cast<uint32_t *>(dvp + n * 8 + c2) = pack2<T>(dv[n][2 * r] * dv_scale, dv[n][2 * r + 1] * dv_scale);
        }
    }
}

#endif  // KERNELS_ATTENTION_FLASH_COMMON_CUH
