// Flash attention forward and backward on mma.sync, any GPU since Ampere (attention.h says
// what they compute, mma.cuh explains the tensor-core fragments), their launchers, and the
// backward's pre- and post-pass, which the Hopper backward uses too. Which kernel runs, with
// which tile, is attention.cu's choice.
#include <math.h>

#include "common/gpu/cuda_check.h"
#include "kernels/attention/flash_common.cuh"
#include "kernels/attention/flash_kernels.cuh"
#include "kernels/attention/mma.cuh"
#include "kernels/device_utils.cuh"

// Forward: blocks of 128 queries (FWD_BLOCK_M, 4 warps of THREADS) over key tiles of BLOCK_N.
// Backward: blocks of 128 keys (64 at d = 64, and where shared memory is short; BwdTile) over
// query tiles of BLOCK_M.
static const int BLOCK_M = 64;
static const int BLOCK_N = 64;
static const int THREADS = 128;

// Shared-memory rows are padded by 8 elements (16 bytes), so that the 8 rows an ldmatrix
// reads start in different banks.
template <int D>
struct Tile {
    static constexpr int LD = D + 8;
};

// Copies rows [row0, row0 + ROWS) of one part (q, k or v) of a head into a shared tile, with
// NTHREADS threads; rows at or past seq become zeros.
template <typename T, int D, int ROWS = BLOCK_M, int NTHREADS = THREADS>
__device__ __forceinline__ void load_tile(T *tile, const T *qkv, const QkvView &view, int part, int row0,
                                          int seq) {
    constexpr int CHUNKS = D / 8;  // 16-byte chunks per row
    for (int c = threadIdx.x; c < ROWS * CHUNKS; c += NTHREADS) {
        int r = c / CHUNKS, col = (c % CHUNKS) * 8;
        int row = row0 + r;
        const T *src = qkv + view.at(row < seq ? row : 0, part, D) + col;
        cp_async_16(tile + r * Tile<D>::LD + col, src, row < seq);
    }
}

// Same for a [seq, batch, heads, d] tensor (ctx, dctx).
template <typename T, int D, int ROWS = BLOCK_M, int NTHREADS = THREADS>
__device__ __forceinline__ void load_ctx_tile(T *tile, const T *x, int64_t token_stride, int64_t head_offset,
                                              int row0, int seq) {
    constexpr int CHUNKS = D / 8;
    for (int c = threadIdx.x; c < ROWS * CHUNKS; c += NTHREADS) {
        int r = c / CHUNKS, col = (c % CHUNKS) * 8;
        int row = row0 + r;
        const T *src = x + (int64_t)(row < seq ? row : 0) * token_stride + head_offset + col;
        cp_async_16(tile + r * Tile<D>::LD + col, src, row < seq);
    }
}

// ---- forward --------------------------------------------------------------------------------
// 128 queries per block, 4 warps, each warp 32 query rows: two 16-row m-tiles, so that every
// K or V fragment a warp loads from shared memory feeds two tensor-core products instead of
// one (FlashAttention-2's layout). Q stays in shared memory and is re-read per key tile:
// keeping it in registers as well would not fit next to the two m-tiles' accumulators.
// K and V in KV_STAGES buffers each. 2: tile t + 1 is copied while tile t is used (102 KiB
// at d = 128). 1 (for GPUs with 99 KiB per block): K_(t+1) is copied while P V_t runs and
// V_(t+1) while S_(t+1) = Q K_(t+1)^T does - FlashAttention-2's order on such GPUs (68 KiB).
static const int FWD_BLOCK_M = 128;
static const int FWD_MT = 2;  // m-tiles per warp

template <typename T, int D, int KV_STAGES>
__global__ void __launch_bounds__(THREADS) flash_forward_kernel(
    const T *qkv, T *ctx, float *lse, int seq, int batch, int heads, int64_t qkv_row, int64_t ctx_row,
    float scale, float p_drop, int causal, const __grid_constant__ PhiloxKeys keys, uint64_t offset, HeadRange drop) {
    constexpr int LD = Tile<D>::LD;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T *q_tile = reinterpret_cast<T *>(smem_raw);
    T *k_tiles = q_tile + FWD_BLOCK_M * LD;            // KV_STAGES buffers
    T *v_tiles = k_tiles + KV_STAGES * BLOCK_N * LD;   // KV_STAGES buffers

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int bh = blockIdx.y, b = bh / heads, h = bh % heads;
    const int q0 = blockIdx.x * FWD_BLOCK_M;
    const QkvView view = {(int64_t)batch * qkv_row, (int64_t)b * qkv_row + (int64_t)h * 3 * D};
    const float scale_log2 = scale * LOG2E;  // exp(x) = exp2(x log2 e)
    const bool dropping = p_drop > 0.0f;
    const uint32_t drop_threshold = dropout_threshold(p_drop);
    const uint64_t drop_bh = drop.global_bh(b, h);

    const int kv_end = causal ? min(seq, q0 + FWD_BLOCK_M) : seq;
    const int tiles = (kv_end + BLOCK_N - 1) / BLOCK_N;

    load_tile<T, D, FWD_BLOCK_M>(q_tile, qkv, view, 0, q0, seq);
    if (tiles > 0) {
        load_tile<T, D, BLOCK_N>(k_tiles, qkv, view, 1, 0, seq);
        // One stage: Q and K_0 are one group and V_0 the next, so that S_0 waits for K_0 only.
        // From then on one group per tile and tensor: K_(t+1), V_(t+1), ...
        if constexpr (KV_STAGES == 1) cp_async_commit();
        load_tile<T, D, BLOCK_N>(v_tiles, qkv, view, 2, 0, seq);
    }
    cp_async_commit();

    // Rows g and g + 8 of each of the warp's two m-tiles: running max (log2 domain), sum, output.
    const int g = lane / 4;
    int row_i[FWD_MT][2];
    uint64_t row_group[FWD_MT][2];  // of the dropout mask (flash_common.cuh)
    float m[FWD_MT][2], l[FWD_MT][2], o[FWD_MT][D / 8][4];
#pragma unroll
    for (int mt = 0; mt < FWD_MT; mt++) {
        row_i[mt][0] = q0 + warp * 32 + mt * 16 + g, row_i[mt][1] = row_i[mt][0] + 8;
        row_group[mt][0] = dropout_row_group(drop_bh, row_i[mt][0], seq);
        row_group[mt][1] = dropout_row_group(drop_bh, row_i[mt][1], seq);
        m[mt][0] = m[mt][1] = -INFINITY, l[mt][0] = l[mt][1] = 0.0f;
#pragma unroll
        for (int n = 0; n < D / 8; n++) o[mt][n][0] = o[mt][n][1] = o[mt][n][2] = o[mt][n][3] = 0.0f;
    }

    for (int t = 0; t < tiles; t++) {
        const int k0 = t * BLOCK_N;
        if constexpr (KV_STAGES == 2) {
            if (t + 1 < tiles) {  // prefetch the next K/V tiles while this one is used
                load_tile<T, D, BLOCK_N>(k_tiles + ((t + 1) % 2) * BLOCK_N * LD, qkv, view, 1, k0 + BLOCK_N, seq);
                load_tile<T, D, BLOCK_N>(v_tiles + ((t + 1) % 2) * BLOCK_N * LD, qkv, view, 2, k0 + BLOCK_N, seq);
                cp_async_commit();
                cp_async_wait<1>();
            } else {
                cp_async_wait<0>();
            }
        } else {
            cp_async_wait<1>();  // K_t has landed (V_t may still be on its way)
        }
        __syncthreads();
        const T *k_tile = k_tiles + (t % KV_STAGES) * BLOCK_N * LD;
        const T *v_tile = v_tiles + (t % KV_STAGES) * BLOCK_N * LD;

        // S = Q K^T: per m-tile 16 x 64, as 8 fragments of 16 x 8; each K fragment serves both.
        float s[FWD_MT][8][4];
#pragma unroll
        for (int mt = 0; mt < FWD_MT; mt++)
#pragma unroll
            for (int n = 0; n < 8; n++) s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            uint32_t qa[FWD_MT][4];
#pragma unroll
            for (int mt = 0; mt < FWD_MT; mt++)
                ldmatrix_x4(qa[mt], q_tile + (warp * 32 + mt * 16 + lane % 16) * LD + kk * 16 + (lane / 16) * 8);
#pragma unroll
            for (int n2 = 0; n2 < 4; n2++) {
                uint32_t kb[4];
                ldmatrix_x4(kb, k_tile + (n2 * 16 + (lane / 16) * 8 + lane % 8) * LD + kk * 16 + ((lane / 8) % 2) * 8);
#pragma unroll
                for (int mt = 0; mt < FWD_MT; mt++) {
                    mma_16816<T>(s[mt][2 * n2], qa[mt], kb[0], kb[1]);
                    mma_16816<T>(s[mt][2 * n2 + 1], qa[mt], kb[2], kb[3]);
                }
            }
        }
        if constexpr (KV_STAGES == 1) {  // every warp is done with K_t: fetch K_(t+1) into its buffer
            __syncthreads();
            if (t + 1 < tiles) load_tile<T, D, BLOCK_N>(k_tiles, qkv, view, 1, k0 + BLOCK_N, seq);
            cp_async_commit();  // (empty after the last tile: one group per tile and tensor)
        }
        TileDropout dropped[FWD_MT];  // this 64-key tile's masks
#pragma unroll
        for (int mt = 0; mt < FWD_MT; mt++) {
            float alpha[2];
            online_softmax_step(s[mt], m[mt], l[mt], alpha, row_i[mt], k0, seq, causal, scale_log2);
            rescale_output(o[mt], alpha);
            if (dropping) dropped[mt] = tile_dropout(row_group[mt], t, keys, offset, drop_threshold);
        }
        if constexpr (KV_STAGES == 1) {
            cp_async_wait<1>();  // V_t has landed (K_(t+1) may still be on its way)
            __syncthreads();
        }
        // O += P V: P's fragments become A fragments directly (16 keys per k-step), dropped by
        // ANDing them with the masks; each V fragment serves both m-tiles.
#pragma unroll
        for (int kk = 0; kk < BLOCK_N / 16; kk++) {
            uint32_t pa[FWD_MT][4];
#pragma unroll
            for (int mt = 0; mt < FWD_MT; mt++) {
                pa[mt][0] = pack2<T>(s[mt][2 * kk][0], s[mt][2 * kk][1]);
                pa[mt][1] = pack2<T>(s[mt][2 * kk][2], s[mt][2 * kk][3]);
                pa[mt][2] = pack2<T>(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
                pa[mt][3] = pack2<T>(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
                if (dropping) drop_a_fragment(pa[mt], dropped[mt], kk);
            }
#pragma unroll
            for (int n2 = 0; n2 < D / 16; n2++) {
                uint32_t vb[4];
                ldmatrix_x4_trans(vb, v_tile + (kk * 16 + ((lane / 8) % 2) * 8 + lane % 8) * LD + (n2 * 2 + lane / 16) * 8);
#pragma unroll
                for (int mt = 0; mt < FWD_MT; mt++) {
                    mma_16816<T>(o[mt][2 * n2], pa[mt], vb[0], vb[1]);
                    mma_16816<T>(o[mt][2 * n2 + 1], pa[mt], vb[2], vb[3]);
                }
            }
        }
        __syncthreads();  // everyone is done with this buffer before it is refilled
        if constexpr (KV_STAGES == 1) {
            if (t + 1 < tiles) load_tile<T, D, BLOCK_N>(v_tiles, qkv, view, 2, k0 + BLOCK_N, seq);
            cp_async_commit();
        }
    }

    const int64_t token_stride = (int64_t)batch * ctx_row, head_offset = (int64_t)b * ctx_row + (int64_t)h * D;
#pragma unroll
    for (int mt = 0; mt < FWD_MT; mt++)
        write_output_rows<T>(ctx, lse + (int64_t)bh * seq, o[mt], m[mt], l[mt], row_i[mt], seq, token_stride,
                             head_offset, dropout_keep_scale(p_drop));
}

// ---- backward -------------------------------------------------------------------------------
// Pre-pass: Dsum[i] = rowsum(dO * O) for every query (one warp per query row), and dQ's
// float accumulator cleared (CLEAR_DQ; the deterministic backward's slices need no clearing).
// tile_stats not NULL (the swapAB backward, flash_backward_swapab.cu): also lse[i] * log2(e)
// and Dsum[i] into its two [batch * heads][stats_row] arrays (stats_row = seq rounded up to
// FLASH_TILE_STATS_QUERIES), the padding past seq included (zeros: every float there is read
// by a query tile's bulk copy, and must not be NaN); the warps then run over stats_row queries
// per head.
template <typename T, int D, bool CLEAR_DQ = true>
__global__ void flash_backward_prepare_kernel(const T *ctx, const T *dctx, float *dsum, float *dq_accum,
                                              int seq, int batch, int heads, int64_t ctx_row, const float *lse,
                                              float *tile_stats, int stats_row) {
    const int warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
    const int row_len = tile_stats ? stats_row : seq;  // query rows per head that warps visit
    const int rows = row_len * batch * heads;
    if (warp >= rows) return;
    // warp indexes (bh, i); ctx is [seq, batch, heads, d]
    const int bh = warp / row_len, i = warp % row_len;
    float *stats_lse = tile_stats ? tile_stats + (int64_t)bh * stats_row + i : nullptr;
    float *stats_dsum = tile_stats ? stats_lse + (int64_t)batch * heads * stats_row : nullptr;
    if (i >= seq) {  // the padding of the tile statistics
        if (lane == 0) *stats_lse = 0.0f, *stats_dsum = 0.0f;
        return;
    }
    const int64_t at = ((int64_t)i * batch + bh / heads) * ctx_row + (int64_t)(bh % heads) * D;
    const T *o = ctx + at;
    const T *d_o = dctx + at;
    float acc = 0.0f;
    for (int t = lane; t < D; t += 32) acc += to_float(o[t]) * to_float(d_o[t]);
    acc = warp_sum(acc);
    if (lane == 0) {
        dsum[(int64_t)bh * seq + i] = acc;
        if (tile_stats) *stats_lse = lse[(int64_t)bh * seq + i] * LOG2E, *stats_dsum = acc;
    }
    if constexpr (CLEAR_DQ) {
        float *dq = dq_accum + ((int64_t)bh * seq + i) * D;
        for (int t = lane; t < D; t += 32) dq[t] = 0.0f;
    }
}

// One block per 128 keys of one head (d = 128; 64 keys for d = 64), 8 warps (4): dK and dV for
// those keys stay in registers while the block walks over the queries, 64 at a time; dQ is
// accumulated in float with atomics (DETERMINISTIC: stored into the block's own slice of the
// workspace, see BwdArgs, and summed in order afterwards). Why 128 keys at d = 128: every key
// block adds its share into every dQ row, and those atomics (seq / keys-per-block of them per
// element of dQ) kept the H100's L2 busy; 128 keys per block halve them (170 -> 182 TFLOP/s).
// At d = 64 the smaller blocks pay more: more of them share a multiprocessor (159 against 148
// TFLOP/s).
// d = 128 with 64 keys per block is the tile for GPUs with 99 KiB per block (sm_86, sm_89):
// 87 KiB of shared memory against 137 KiB.
template <int BLOCK_KEYS>
struct BwdTile {
    static constexpr int KEY_HALVES = BLOCK_KEYS / 64;  // blocks of 64 keys per block
    static constexpr int BLOCK_N = 64 * KEY_HALVES;
    static constexpr int THREADS = 128 * KEY_HALVES;    // 4 warps per 64 keys
};

template <typename T, int D, int BLOCK_KEYS, bool DETERMINISTIC = false>
__global__ void __launch_bounds__(BwdTile<BLOCK_KEYS>::THREADS) flash_backward_kernel(
    const T *qkv, const T *dctx, const float *lse, const float *dsum, float *dq_accum, T *dqkv, int seq,
    int batch, int heads, int64_t qkv_row, int64_t ctx_row, float scale, float p_drop, int causal,
    const __grid_constant__ PhiloxKeys keys,
    uint64_t offset, HeadRange drop) {
    constexpr int LD = Tile<D>::LD;
    constexpr int BWD_BLOCK_N = BwdTile<BLOCK_KEYS>::BLOCK_N, BWD_THREADS = BwdTile<BLOCK_KEYS>::THREADS;
    constexpr int LDP = BWD_BLOCK_N + 8;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T *k_tile = reinterpret_cast<T *>(smem_raw);
    T *v_tile = k_tile + BWD_BLOCK_N * LD;
    T *q_tile = v_tile + BWD_BLOCK_N * LD;
    T *do_tile = q_tile + BLOCK_M * LD;
    T *p_tile = do_tile + BLOCK_M * LD;   // dropped probabilities [query][key]
    T *ds_tile = p_tile + BLOCK_M * LDP;  // dS [query][key]
    float *lse_tile = reinterpret_cast<float *>(ds_tile + BLOCK_M * LDP);
    float *dsum_tile = lse_tile + BLOCK_M;

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int g = lane / 4, c2 = (lane % 4) * 2;
    const int bh = blockIdx.y, b = bh / heads, h = bh % heads;
    const int k0 = blockIdx.x * BWD_BLOCK_N;
    // For S, dP and dQ the warps split the 64-query x BLOCK_N-key step in a 4 x KEY_HALVES grid:
    // warp w takes queries [16 qw, 16 qw + 16) and, for S and dP, keys [64 kh, 64 kh + 64);
    // for dQ, the output columns [DH kh, DH kh + DH) (DH = D / KEY_HALVES) over all the keys.
    const int qw = warp % 4, kh = warp / 4;
    const QkvView view = {(int64_t)batch * qkv_row, (int64_t)b * qkv_row + (int64_t)h * 3 * D};
    const int64_t ctx_stride = (int64_t)batch * ctx_row, ctx_offset = (int64_t)b * ctx_row + (int64_t)h * D;
    const float scale_log2 = scale * LOG2E;
    const bool dropping = p_drop > 0.0f;
    const uint32_t drop_threshold = dropout_threshold(p_drop);
    const float keep_scale = dropout_keep_scale(p_drop);

    load_tile<T, D, BWD_BLOCK_N, BWD_THREADS>(k_tile, qkv, view, 1, k0, seq);
    load_tile<T, D, BWD_BLOCK_N, BWD_THREADS>(v_tile, qkv, view, 2, k0, seq);
    cp_async_commit();

    // dK and dV of this warp's 16 keys [16 w, 16 w + 16).
    float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) dk[n][e] = dv[n][e] = 0.0f;

    const int m_start = causal ? (k0 / BLOCK_M) * BLOCK_M : 0;
    for (int q0 = m_start; q0 < seq; q0 += BLOCK_M) {
        load_tile<T, D, BLOCK_M, BWD_THREADS>(q_tile, qkv, view, 0, q0, seq);
        load_ctx_tile<T, D, BLOCK_M, BWD_THREADS>(do_tile, dctx, ctx_stride, ctx_offset, q0, seq);
        cp_async_commit();
        for (int r = threadIdx.x; r < BLOCK_M; r += BWD_THREADS) {
            int i = q0 + r;
            lse_tile[r] = i < seq ? lse[(int64_t)bh * seq + i] * LOG2E : 0.0f;
            dsum_tile[r] = i < seq ? dsum[(int64_t)bh * seq + i] : 0.0f;
        }
        cp_async_wait<0>();
        __syncthreads();

        // S = Q K^T and dPd = dO V^T for this warp's 16 queries x 64 keys.
        const int kb0 = 64 * kh;  // the warp's first key within the block
        float s[8][4], dp[8][4];
#pragma unroll
        for (int n = 0; n < 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[n][e] = dp[n][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            uint32_t qa[4], da[4];
            ldmatrix_x4(qa, q_tile + (qw * 16 + lane % 16) * LD + kk * 16 + (lane / 16) * 8);
            ldmatrix_x4(da, do_tile + (qw * 16 + lane % 16) * LD + kk * 16 + (lane / 16) * 8);
#pragma unroll
            for (int n2 = 0; n2 < 4; n2++) {
                uint32_t kb[4], vb[4];
                int row = (kb0 + n2 * 16 + (lane / 16) * 8 + lane % 8) * LD + kk * 16 + ((lane / 8) % 2) * 8;
                ldmatrix_x4(kb, k_tile + row);
                ldmatrix_x4(vb, v_tile + row);
                mma_16816<T>(s[2 * n2], qa, kb[0], kb[1]);
                mma_16816<T>(s[2 * n2 + 1], qa, kb[2], kb[3]);
                mma_16816<T>(dp[2 * n2], da, vb[0], vb[1]);
                mma_16816<T>(dp[2 * n2 + 1], da, vb[2], vb[3]);
            }
        }
        // P = exp(S scale - lse); Pd = P * mask (the factor 1 / (1 - p) is applied to dV at the
        // end); dS = P * (dP - Dsum) with dP = dPd * mask / (1 - p).
        TileDropout dropped;
        if (dropping) {
            const uint64_t dbh = drop.global_bh(b, h);
            const uint64_t row_group[2] = {dropout_row_group(dbh, q0 + qw * 16 + g, seq),
                                           dropout_row_group(dbh, q0 + qw * 16 + g + 8, seq)};
            dropped = tile_dropout(row_group, (k0 + kb0) / 64, keys, offset, drop_threshold);
        }
#pragma unroll
        for (int r = 0; r < 2; r++) {
            int il = qw * 16 + g + 8 * r, i = q0 + il;
            float lse_i = lse_tile[il], dsum_i = dsum_tile[il];

#pragma unroll
            for (int n = 0; n < 8; n++) {
                int jl = kb0 + n * 8 + c2, j = k0 + jl;
                float p[2], dpd[2];
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    bool masked_out = i >= seq || j + e >= seq || (causal && j + e > i);
                    p[e] = masked_out ? 0.0f : exp2_approx(fmaf(s[n][2 * r + e], scale_log2, -lse_i));
                    dpd[e] = dropping ? masked(dp[n][2 * r + e], dropped.row[r].element_mask(n, e)) * keep_scale
                                      : dp[n][2 * r + e];
                }
                uint32_t pd = pack2<T>(p[0], p[1]);
                if (dropping) pd &= dropped.row[r].pair_mask(n);
                *reinterpret_cast<uint32_t *>(p_tile + il * LDP + jl) = pd;
                *reinterpret_cast<uint32_t *>(ds_tile + il * LDP + jl) =
                    pack2<T>(p[0] * (dpd[0] - dsum_i), p[1] * (dpd[1] - dsum_i));
            }
        }
        __syncthreads();

        // Warp w: keys [16w, 16w + 16). dV += Pd^T dO and dK += dS^T Q (scale applied at the end).
#pragma unroll
        for (int kq = 0; kq < BLOCK_M / 16; kq++) {
            uint32_t pa[4], sa[4];
            int at = (kq * 16 + (lane / 16) * 8 + lane % 8) * LDP + warp * 16 + ((lane / 8) % 2) * 8;
            ldmatrix_x4_trans(pa, p_tile + at);
            ldmatrix_x4_trans(sa, ds_tile + at);
            // The tiles are stored [query][key]; transposed on the way in, lane groups 0-3 fetch
            // (keys 0-7, q 0-7), (keys 8-15, q 0-7), (keys 0-7, q 8-15), (keys 8-15, q 8-15):
            // A fragments of Pd^T and dS^T (16 keys x 16 queries).
#pragma unroll
            for (int n2 = 0; n2 < D / 16; n2++) {
                uint32_t ob[4], qb[4];
                int bt = (kq * 16 + ((lane / 8) % 2) * 8 + lane % 8) * LD + (n2 * 2 + lane / 16) * 8;
                ldmatrix_x4_trans(ob, do_tile + bt);
                ldmatrix_x4_trans(qb, q_tile + bt);
                mma_16816<T>(dv[2 * n2], pa, ob[0], ob[1]);
                mma_16816<T>(dv[2 * n2 + 1], pa, ob[2], ob[3]);
                mma_16816<T>(dk[2 * n2], sa, qb[0], qb[1]);
                mma_16816<T>(dk[2 * n2 + 1], sa, qb[2], qb[3]);
            }
        }
        // dQ += dS K * scale for this warp's 16 queries and D/2 columns, over all 128 keys,
        // added into the float accumulator (DETERMINISTIC: stored into this block's slice,
        // matrix blockIdx.x * batch * heads + bh of the slices).
        {
            constexpr int DH = D / BwdTile<BLOCK_KEYS>::KEY_HALVES;
            const int d0 = DH * kh;
            float dq[DH / 8][4];
#pragma unroll
            for (int n = 0; n < DH / 8; n++) dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < BWD_BLOCK_N / 16; kk++) {
                uint32_t sa[4];
                ldmatrix_x4(sa, ds_tile + (qw * 16 + lane % 16) * LDP + kk * 16 + (lane / 16) * 8);
#pragma unroll
                for (int n2 = 0; n2 < DH / 16; n2++) {
                    uint32_t kb[4];
                    ldmatrix_x4_trans(kb, k_tile + (kk * 16 + ((lane / 8) % 2) * 8 + lane % 8) * LD + d0 +
                                              (n2 * 2 + lane / 16) * 8);
                    mma_16816<T>(dq[2 * n2], sa, kb[0], kb[1]);
                    mma_16816<T>(dq[2 * n2 + 1], sa, kb[2], kb[3]);
                }
            }
#pragma unroll
            for (int r = 0; r < 2; r++) {
                int i = q0 + qw * 16 + g + 8 * r;
                if (i >= seq) continue;
                const int64_t matrix = DETERMINISTIC ? (int64_t)blockIdx.x * gridDim.y + bh : bh;
                float *acc = dq_accum + (matrix * seq + i) * D + d0;
#pragma unroll
                for (int n = 0; n < DH / 8; n++) {
                    if constexpr (DETERMINISTIC) {
                        *reinterpret_cast<float2 *>(acc + n * 8 + c2) =
                            make_float2(dq[n][2 * r] * scale, dq[n][2 * r + 1] * scale);
                    } else {
#if __CUDA_ARCH__ >= 900  // one 8-byte atomic per pair: half the L2 operations
                        atomicAdd(reinterpret_cast<float2 *>(acc + n * 8 + c2),
                                  make_float2(dq[n][2 * r] * scale, dq[n][2 * r + 1] * scale));
#else  // before Hopper: one float at a time
                        atomicAdd(acc + n * 8 + c2, dq[n][2 * r] * scale);
                        atomicAdd(acc + n * 8 + c2 + 1, dq[n][2 * r + 1] * scale);
#endif
                    }
                }
            }
        }
        __syncthreads();  // before the next query block overwrites the tiles
    }

    // dK (scaled) and dV (times dropout's 1 / (1 - p)) of this warp's 16 keys into dqkv's k and v slots.
    write_dk_dv_rows<T>(dqkv, view, dk, dv, k0 + warp * 16 + g, seq, scale, keep_scale);
}

// Values t .. t + 7 of dQ's row for query i of head bh (batch * heads + head), converted to T,
// into that query's q slot of dqkv: one 16-byte store.
template <typename T, int D>
__device__ __forceinline__ void write_dq8(T *dqkv, const float (&v)[8], int i, int bh, int t, int batch, int heads,
                                          int64_t qkv_row) {
    Pack8<T> out;
#pragma unroll
    for (int k = 0; k < 8; k++) out.v[k] = from_float<T>(v[k]);
    *reinterpret_cast<Pack8<T> *>(dqkv + ((int64_t)i * batch + bh / heads) * qkv_row + (int64_t)(bh % heads) * 3 * D +
                                  t) = out;
}

// dQ's float accumulator into dqkv's q slots, 8 values per thread: two 16-byte loads, one
// 16-byte store (a memory-bound pass: 6 bytes per value).
template <typename T, int D>
__global__ void flash_backward_dq_kernel(const float *dq_accum, T *dqkv, int seq, int batch, int heads,
                                         int64_t qkv_row) {
    const int64_t idx = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * 8;  // over (bh, i, t)
    if (idx >= (int64_t)batch * heads * seq * D) return;
    const int t = (int)(idx % D);
    const int64_t row = idx / D;
    const int i = (int)(row % seq), bh = (int)(row / seq);
    const float4 lo = *reinterpret_cast<const float4 *>(dq_accum + idx);
    const float4 hi = *reinterpret_cast<const float4 *>(dq_accum + idx + 4);
    const float v[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
    write_dq8<T, D>(dqkv, v, i, bh, t, batch, heads, qkv_row);
}

// The deterministic backward's dQ: per 8 values, the slices of the key blocks that wrote the
// row (all of them; when causal, blocks 0 .. i / block_keys, the rest start past query i and
// did not visit it) added in block order 0, 1, 2, ... - the same order on every run, so the
// same rounding - then converted as above. Reads 4 * key_blocks bytes per value: memory-bound.
template <typename T, int D>
__global__ void flash_backward_sum_dq_kernel(const float *dq_slices, T *dqkv, int seq, int batch, int heads,
                                             int64_t qkv_row, int key_blocks, int block_keys, int causal) {
    const int64_t slice = (int64_t)batch * heads * seq * D;                    // floats per key block
    const int64_t idx = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * 8;  // over (bh, i, t)
    if (idx >= slice) return;
    const int t = (int)(idx % D);
    const int64_t row = idx / D;
    const int i = (int)(row % seq), bh = (int)(row / seq);
    const int blocks = causal ? min(key_blocks, i / block_keys + 1) : key_blocks;
    float v[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    for (int kb = 0; kb < blocks; kb++) {
        const float *part = dq_slices + kb * slice + idx;
        const float4 lo = *reinterpret_cast<const float4 *>(part);
        const float4 hi = *reinterpret_cast<const float4 *>(part + 4);
        v[0] += lo.x, v[1] += lo.y, v[2] += lo.z, v[3] += lo.w;
        v[4] += hi.x, v[5] += hi.y, v[6] += hi.z, v[7] += hi.w;
    }
    write_dq8<T, D>(dqkv, v, i, bh, t, batch, heads, qkv_row);
}

// ---- launchers --------------------------------------------------------------------------
// The shared memory of each kernel, as it carves it up (both dtypes are 16 bits wide).
// Forward: Q, then KV_STAGES buffers each of K and V, rows padded to Tile<D>::LD.
static constexpr size_t forward_smem_bytes(int head_dim, int kv_stages) {
    return (size_t)(FWD_BLOCK_M + 2 * kv_stages * BLOCK_N) * (head_dim + 8) * 2;
}

// Backward: K and V of the block's keys, Q and dO of a query tile, P and dS [query][key]
// (rows of keys + 8), then lse and Dsum of the tile in float.
static constexpr size_t backward_smem_bytes(int head_dim, int block_keys) {
    return (size_t)(2 * block_keys + 2 * BLOCK_M) * (head_dim + 8) * 2 + (size_t)2 * BLOCK_M * (block_keys + 8) * 2 +
           2 * BLOCK_M * sizeof(float);
}

size_t flash_forward_mma_smem_bytes(int head_dim, int kv_stages) { return forward_smem_bytes(head_dim, kv_stages); }
size_t flash_backward_mma_smem_bytes(int head_dim, int block_keys) {
    return backward_smem_bytes(head_dim, block_keys);
}

template <typename T, int D, int KV_STAGES>
static void launch_forward(const FwdArgs &a) {
    constexpr size_t smem = forward_smem_bytes(D, KV_STAGES);
    allow_dynamic_smem<flash_forward_kernel<T, D, KV_STAGES>>(smem);
    dim3 grid(ceil_div(a.seq, FWD_BLOCK_M), a.batch * a.heads);
    flash_forward_kernel<T, D, KV_STAGES><<<grid, THREADS, smem>>>(
        (const T *)a.qkv, (T *)a.ctx, a.lse, a.seq, a.batch, a.heads, a.qkv_row, a.ctx_row, 1.0f / sqrtf((float)D),
        a.p_drop, a.causal, a.keys, a.offset, a.drop);
    CHECK_LAUNCH();
}

template <typename T, int D>
void flash_forward_mma(const FwdArgs &a, int kv_stages) {
    if (kv_stages == 2)
        launch_forward<T, D, 2>(a);
    else
        launch_forward<T, D, 1>(a);
}

template <typename T, int D, int BLOCK_KEYS, bool DETERMINISTIC>
static void launch_backward_kernel(const BwdArgs &a) {
    constexpr size_t smem = backward_smem_bytes(D, BLOCK_KEYS);
    allow_dynamic_smem<flash_backward_kernel<T, D, BLOCK_KEYS, DETERMINISTIC>>(smem);
    dim3 grid(ceil_div(a.seq, BLOCK_KEYS), a.batch * a.heads);
    flash_backward_kernel<T, D, BLOCK_KEYS, DETERMINISTIC><<<grid, BwdTile<BLOCK_KEYS>::THREADS, smem>>>(
        (const T *)a.qkv, (const T *)a.dctx, a.lse, a.dsum, a.dq_accum, (T *)a.dqkv, a.seq, a.batch, a.heads,
        a.qkv_row, a.ctx_row, 1.0f / sqrtf((float)D), a.p_drop, a.causal, a.keys, a.offset, a.drop);
    CHECK_LAUNCH();
}

template <typename T, int D, int BLOCK_KEYS>
static void launch_backward(const BwdArgs &a) {
    if (a.deterministic)
        launch_backward_kernel<T, D, BLOCK_KEYS, true>(a);
    else
        launch_backward_kernel<T, D, BLOCK_KEYS, false>(a);
}

// 128 keys per block at d = 128 only: at d = 64 the 64-key blocks are faster (above), so
// only those are compiled.
template <typename T, int D>
void flash_backward_mma(const BwdArgs &a, int block_keys) {
    if constexpr (D == 128) {
        if (block_keys == 128) {
            launch_backward<T, D, 128>(a);
            return;
        }
    }
    launch_backward<T, D, 64>(a);
}

template <typename T, int D>
void flash_backward_prepare(const FlashParams &p, const void *ctx, const void *dctx, float *dsum, float *dq_accum,
                            const float *lse, float *tile_stats) {
    const int stats_row = flash_tile_stats_row(p.seq);
    const int rows = (tile_stats ? stats_row : p.seq) * p.batch * p.heads;
    const unsigned blocks = ceil_div((int64_t)rows * 32, 256);
    if (dq_accum)
        flash_backward_prepare_kernel<T, D><<<blocks, 256>>>((const T *)ctx, (const T *)dctx, dsum, dq_accum, p.seq,
                                                             p.batch, p.heads, p.ctx_row, lse, tile_stats, stats_row);
    else
        flash_backward_prepare_kernel<T, D, false><<<blocks, 256>>>((const T *)ctx, (const T *)dctx, dsum, nullptr,
                                                                    p.seq, p.batch, p.heads, p.ctx_row, lse,
                                                                    tile_stats, stats_row);
    CHECK_LAUNCH();
}

template <typename T, int D>
void flash_backward_write_dq(const FlashParams &p, const float *dq_accum, void *dqkv) {
    const int64_t total = (int64_t)p.seq * p.batch * p.heads * D;  // a multiple of 8; dqkv's rows are 16-byte aligned
    flash_backward_dq_kernel<T, D><<<ceil_div(total / 8, 256), 256>>>(dq_accum, (T *)dqkv, p.seq, p.batch, p.heads,
                                                                      p.qkv_row);
    CHECK_LAUNCH();
}

template <typename T, int D>
void flash_backward_sum_dq_slices(const FlashParams &p, const float *dq_slices, int block_keys, void *dqkv) {
    const int64_t total = (int64_t)p.seq * p.batch * p.heads * D;  // as flash_backward_write_dq
    flash_backward_sum_dq_kernel<T, D><<<ceil_div(total / 8, 256), 256>>>(
        dq_slices, (T *)dqkv, p.seq, p.batch, p.heads, p.qkv_row, (int)ceil_div(p.seq, block_keys), block_keys,
        p.causal);
    CHECK_LAUNCH();
}

#define INSTANTIATE(T, D)                                                                                  \
    template void flash_forward_mma<T, D>(const FwdArgs &, int);                                          \
    template void flash_backward_mma<T, D>(const BwdArgs &, int);                                         \
    template void flash_backward_prepare<T, D>(const FlashParams &, const void *, const void *, float *, \
                                               float *, const float *, float *);                          \
    template void flash_backward_write_dq<T, D>(const FlashParams &, const float *, void *);              \
    template void flash_backward_sum_dq_slices<T, D>(const FlashParams &, const float *, int, void *);
INSTANTIATE(__half, 64)
INSTANTIATE(__half, 128)
INSTANTIATE(__nv_bfloat16, 64)
INSTANTIATE(__nv_bfloat16, 128)
