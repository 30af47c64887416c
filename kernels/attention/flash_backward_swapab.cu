// Flash attention backward on Hopper with the scores computed transposed ("swapAB"), head dims
// 64 and 128 (D): FlashAttention-3's backward (Shah et al., "FlashAttention-3", 2024; its
// hopper/ code with SdP_swapAB and Mma_dKV_is_RS), written anew on this repository's wgmma,
// TMA and mbarrier wrappers. FlashAttention-3 has no dropout; this one has (DROPOUT, a template
// parameter: without it the kernel is what it was), the forward's mask bit for bit, drawn
// transposed - "dropout, transposed" below says how.
//
// What swapAB means. A block owns 128 keys and walks over the queries a tile at a time; per
// tile the backward needs, with P = softmax(S) recomputed from S = Q K^T and the saved lse,
//   dV += P^T dO,  dP = dO V^T,  dS = P * (dP - Dsum),  dK += dS^T Q,  dQ += dS K
// (dV and dK summed over the query tiles in registers, dQ over the key blocks in memory).
// A wgmma's A operand may come from registers, in the layout of its own accumulator (rows =
// the M dimension, wgmma.cuh), but only as the matrix's rows, never transposed. dV and dK take
// P and dS TRANSPOSED, keys as rows. flash_backward_wgmma.cu computes S with the queries as
// the wgmma's M dimension, so a thread holds rows of P, not of P^T, and P and dS must go
// through shared memory to be read back transposed. Here each warpgroup computes
//   S^T = K_w Q^T and dP^T = V_w dO^T    (M = its 64 keys, N = the tile's queries)
// instead: a thread's accumulator then holds rows of P^T and dS^T, which are exactly the A
// fragments of dV_w += P^T dO and dK_w += dS^T Q (fragment kk = accumulator column blocks 2 kk
// and 2 kk + 1, as the forward's P of O += P V). Those two products run from registers (RS
// wgmmas): no P tile in shared memory, no barrier for it, no A operand read from shared
// memory. Only dS^T goes to shared memory, for dQ = dS K, which needs every key of the block
// (both warpgroups') and reads it as an MN-major A operand. A bonus at D = 64: the query tile
// can be 128 wide (N = 128 for S^T and dP^T) where the queries-as-M kernel's score products
// have N = 64 keys per warpgroup; wider wgmmas run closer to the tensor cores' peak.
//
// Block: 128 keys of one head (K and V loaded once by TMA), two warpgroups (256 threads, no
// producer warpgroup: a few threads issue the TMA copies, as in flash_backward_wgmma.cu);
// warpgroup w owns keys [64 w, 64 w + 64) and keeps their dK and dV in registers. Query tiles
// of BLOCK_M = 128 queries (D = 64) or 64 (D = 128), Q and dO in two stages, each stage's
// copies counted on its mbarrier. Per tile, warpgroup w:
//   1. S^T = K_w Q^T, dP^T = V_w dO^T    wgmma SS, A = K_w / V_w and B = Q / dO, all K-major;
//                                        two commit groups, 64 keys x BLOCK_M queries each
//   1'. DROPOUT, while those run: the dropout bits of the warpgroup's keys x the tile's queries
//      drawn into a bit matrix in shared memory; a warpgroup barrier (ids 1, 2)
//   2. P^T = exp2(S^T scale log2(e) - lse[i] log2(e)), masked (key j > query i when causal; j
//      or i >= seq) to 0; packed to 16-bit A fragments (DROPOUT: ANDed with the mask, Pd^T);
//      dV_w += P^T dO (RS, B = dO MN-major)
//   3. dS^T = P^T * (dP^T - Dsum[i]) (DROPOUT: dP^T masked and times 1 / (1 - p) first, as
//      flash_backward_wgmma.cu); packed; dK_w += dS^T Q (RS, B = Q MN-major); dS^T stored
//      to shared memory, [key][query] panels of 64 queries (128-byte swizzle)
//   4. block barrier (dQ needs both warpgroups' keys); dQ = dS K over all 128 keys, wgmma SS
//      with A = dS^T read MN-major and B = K MN-major: D = 64, warpgroup w the queries
//      [64 w, 64 w + 64) x all 64 columns; D = 128, the 64 queries x columns [64 w, 64 w + 64)
//   5. dQ (scaled) staged in shared memory as floats, added into the float accumulator by TMA
//      tensor reductions (two boxes of 64 rows x 32 floats per warpgroup); DETERMINISTIC:
//      stored into the block's own slice (one per 128 keys), flash_backward_sum_dq_slices
//      adds the slices in order
//   6. block barrier: the stage's Q and dO (and the dS^T tile) are free; the next-but-one
//      tile's copies go into the stage
// lse and Dsum are needed per QUERY (a thread's accumulator columns 8 n + 2 c, + 1: 2 N / 8
// queries), so they are staged in shared memory per tile: the prepare pass writes lse log2(e)
// and Dsum into padded rows of the workspace (flash_kernels.cuh's tile statistics) and the
// thread that copies the tile's first Q panel adds two 1-D bulk copies of BLOCK_M floats to
// the same stage mbarrier; threads read them as float2.
//
// Registers (per thread, 256 threads, one block per SM: at most 255): D = 64 holds S^T and dP^T
// (64 floats each), dK and dV (32 each), P^T's fragments (32) at the peak, about 224 + the
// addressing; D = 128 holds S^T, dP^T (32 each), dK, dV (64 each), the fragments (16 + 16).
// The dQ accumulator (32) is live only once S^T and dP^T are dead. ptxas -v, sm_90a (CUDA
// 13.0): D = 64 250 without dropout, 255 with; D = 128 238, 247; no spills. (Held
// through P^T and dS^T, the eight mask words of D = 64 spilled: they are read where used.)
//
// Shared memory (1024-byte aligned panels; + 1 KiB for the alignment):
//   D = 64:  K, V 16 KiB each; Q, dO 2 x 16 KiB each; dS^T 2 panels x 16 KiB; dQ stage 32 KiB;
//            statistics 2 x 1 KiB; dropout bits 2 KiB: 165 KiB; persistent (below) a second K,
//            V buffer, 197 KiB
//   D = 128: K, V 32 KiB each; Q, dO 2 x 16 KiB each; dS^T 1 panel, 16 KiB; dQ stage 32 KiB;
//            statistics 2 x 0.5 KiB; dropout bits 1 KiB: 179 KiB
#include "common/gpu/cuda_check.h"
#include "kernels/attention/block_order.h"
#include "kernels/attention/flash_backward_common.cuh"
#include "kernels/attention/flash_common.cuh"
#include "kernels/attention/flash_kernels.cuh"
#include "kernels/attention/hopper_pipeline.cuh"
#include "kernels/attention/wgmma.cuh"
#include "kernels/device_utils.cuh"

namespace {

constexpr int SW_BLOCK_N = 128;  // keys per block
constexpr int SW_THREADS = 256;  // two warpgroups
constexpr int SW_KV_PANEL = SW_BLOCK_N * 128;  // bytes of a 64-column panel of K or V (128 rows)
constexpr int SW_DS_PANEL = SW_BLOCK_N * 128;  // ... of dS^T: 128 keys x 64 queries

// The tile sizes of head dim D.
template <int D>
struct SwapabTile {
    static constexpr int BLOCK_M = D == 64 ? 128 : 64;  // queries per step
    static constexpr int PANELS = D / 64;                // 64-column panels of K, V, Q, dO
    static constexpr int KV_BYTES = PANELS * SW_KV_PANEL;
    static constexpr int QO_PANEL = BLOCK_M * 128;  // a panel of Q or dO: BLOCK_M rows
    static constexpr int QO_BYTES = PANELS * QO_PANEL;
    static constexpr int DS_BYTES = BLOCK_M / 64 * SW_DS_PANEL;
    static constexpr int DQ_BYTES = BLOCK_M * D * 4;  // four panels of 64 rows x 32 floats
    static constexpr int STATS_FLOATS = 2 * BLOCK_M;  // lse log2(e), then Dsum, of one stage
    // The dropout bit matrix of a step (KeyMaskBits): per warpgroup 64 keys x MASK_WORDS words
    // of 32 queries.
    static constexpr int MASK_WORDS = BLOCK_M / 32;
    static constexpr int MASK_BYTES = 2 * 64 * MASK_WORDS * 4;
    // K, V, two stages of Q and dO, dS^T, the staged dQ, two stages of statistics, the dropout
    // bits (reserved whether or not the launch drops), + room for the 1024-byte alignment.
    static constexpr size_t SMEM =
        2 * KV_BYTES + 4 * QO_BYTES + DS_BYTES + DQ_BYTES + 2 * STATS_FLOATS * 4 + MASK_BYTES + 1024;
    static_assert(DQ_BYTES == 4 * DQ_STAGE_PANEL, "dQ is staged as four panels");
    static_assert(SMEM <= 227 * 1024, "Hopper's limit per block");
};

// ---- dropout, transposed: flash_backward_common.cuh (draw_mask_bits, KeyMaskBits) ----------

// (Compiled where the kernel is: elsewhere nothing calls it, and nvcc warns.)
#if WGMMA_AVAILABLE
// ---- the per-step math of a warpgroup -------------------------------------------------------
// Steps 1 to 3 of the header (S^T and dP^T issued, the dropout bits drawn, masked P^T, dV,
// dS^T, dK, dS^T stored), apart from how a step starts (which barrier says the stage landed)
// and what follows the stored dS^T (dQ, its staging and who adds it). This struct holds what
// one thread needs for them, fixed for the block; products() runs the steps of one query tile.
// Everything is inlined into the kernel, so the fields live in registers as the kernel's own
// variables would. (A warp-specialised kernel - a producer warpgroup, consumers that never meet
// - shared it; measured slower on the H200 and kept on branch swapws: docs/worklog.md.)
template <typename T, int D, bool DROPOUT>
struct SwapabStepMath {
    using Tile = SwapabTile<D>;
    static constexpr int BLOCK_M = Tile::BLOCK_M, QO_PANEL = Tile::QO_PANEL, MASK_WORDS = Tile::MASK_WORDS;
    static constexpr int NQ = BLOCK_M / 8;   // accumulator column blocks of S^T and dP^T (8 queries each)
    static constexpr int KQ = BLOCK_M / 16;  // A fragments of P^T and dS^T (16 queries each)

    uint32_t k_addr, v_addr;  // the block's K and V tiles (128 keys, swizzled panels)
    unsigned char *ds_tile;   // dS^T, [key][query], panels of 64 queries (the block's 128 keys)
    uint32_t *wg_mask_bits;   // DROPOUT: this warpgroup's bit matrix (KeyMaskBits)
    int key_group;            // which 64 keys of the block the warpgroup owns: 0 or 1
    int barrier_warpgroup;    // warpgroup_barrier's argument: the hardware warpgroup (ids 1 + it)
    int wq, g, c;             // the warp in its warpgroup; lane / 4, lane % 4
    int key0, j_first;        // the warpgroup's first key; this thread's keys j_first, j_first + 8
    int ds_row;               // this thread's first row of dS^T: 64 key_group + 16 wq + g
    int seq;                  // the sequence length
    float scale_log2, keep_scale;
    uint32_t drop_threshold;
    uint64_t group_step, drop_group;  // DROPOUT: Philox groups (the kernel's "Dropout" comment)

    // acc = X_w Y^T, 64 keys x BLOCK_M queries (S^T: X = K, Y = Q; dP^T: X = V, Y = dO), issued
    // only: X (at x_addr, the block's 128 rows) and Y (y_addr, BLOCK_M rows) both K-major; step
    // kk takes 16 of the D columns (panel kk / 4, 32 bytes into its rows); the warpgroup's keys
    // start 64 rows (8192 bytes) into each panel of X.
    __device__ __forceinline__ void key_rows_product(float (&acc)[NQ][4], uint32_t x_addr, uint32_t y_addr) const {
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            const uint32_t kv = (kk / 4) * SW_KV_PANEL + key_group * 64 * 128 + (kk % 4) * 32;
            const uint32_t qo = (kk / 4) * QO_PANEL + (kk % 4) * 32;
            wgmma_ss<T, BLOCK_M>(acc, wgmma_descriptor(x_addr + kv, 0, 1024), wgmma_descriptor(y_addr + qo, 0, 1024),
                                 kk > 0);
        }
    }

    // One query tile from q0: Q and dO at q_addr, do_addr (QO_PANEL between their 64-column
    // panels), its statistics (lse log2(e), then Dsum, BLOCK_M floats each) at stage_stats.
    // Returns with dV (the older) and dK (the newer) as the two wgmma groups still in flight,
    // reading pt, dst, Q and dO; dS^T stored by this thread (no fence, no barrier: the caller's).
    __device__ __forceinline__ void products(const BwdArgs &a, int q0, uint32_t q_addr, uint32_t do_addr,
                                             const float *stage_stats, float (&s)[NQ][4], float (&dp)[NQ][4],
                                             uint32_t (&pt)[KQ][4], uint32_t (&dst)[KQ][4], float (&dk)[D / 8][4],
                                             float (&dv)[D / 8][4]) {
        // The tile's lse log2(e) and Dsum, per query; this thread's are at 8 n + 2 c, + 1.
        const float2 *lse_log2 = reinterpret_cast<const float2 *>(stage_stats);
        const float2 *dsum = lse_log2 + BLOCK_M / 2;

        // 1. S^T = K_w Q^T and dP^T = V_w dO^T, two groups (B is the whole query tile).
        wgmma_fence();
        key_rows_product(s, k_addr, q_addr);
        wgmma_commit();
        key_rows_product(dp, v_addr, do_addr);
        wgmma_commit();

        // While the tensor cores work: the dropout bits of the warpgroup's keys x the tile's
        // queries into its bit matrix (the previous step's readers are past the block barrier
        // that ended it), then the warpgroup's barrier: all four warps' bits are there before
        // any thread reads its two keys' words (keep_words, where P^T and dS^T are masked).
        KeyMaskBits keep;
        const uint32_t *keep_words = wg_mask_bits + (16 * wq + g) * MASK_WORDS;  // row 1: 8 keys further
        if constexpr (DROPOUT) {
            draw_mask_bits<MASK_WORDS>(wg_mask_bits, drop_group, group_step, wq, a.keys, a.offset, drop_threshold);
            drop_group += MASK_WORDS * group_step;  // the next step's first query: BLOCK_M further
            warpgroup_barrier(barrier_warpgroup);
        }

        // 2. P^T = exp2(S^T scale log2(e) - lse[i] log2(e)) in s, masked scores -inf first
        // (exp2: 0). s[n][e]: key j_first + 8 (e / 2), query q0 + 8 n + 2 c + e % 2. Only tiles
        // at the edges or, when causal, on the diagonal need the mask; the test is per warp
        // (its 16 keys against the tile's queries).
        wgmma_wait<1>();
        wgmma_settle(s);
        const int warp_key0 = key0 + 16 * wq;
        if (q0 + BLOCK_M > seq || warp_key0 + 16 > seq || (a.causal && warp_key0 + 15 > q0)) {
#pragma unroll
            for (int n = 0; n < NQ; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int i = q0 + 8 * n + 2 * c + (e & 1), j = j_first + 8 * (e >> 1);
                    if (i >= seq || j >= seq || (a.causal && j > i)) s[n][e] = -INFINITY;
                }
        }
        // P^T as A fragments (16-bit pairs, transposed_probabilities).
#pragma unroll
        for (int n = 0; n < NQ; n++) {
            transposed_probabilities<T>(s[n], lse_log2[4 * n + c], scale_log2, pt[n / 2], n % 2);
            if constexpr (DROPOUT) {  // Pd^T = P^T * mask (dV's factor 1 / (1 - p) comes at the end)
                if (n % 4 == 0) keep.load(keep_words + n / 4, 8 * MASK_WORDS, c);
                pt[n / 2][2 * (n % 2)] &= keep.pair_mask(0, n);
                pt[n / 2][2 * (n % 2) + 1] &= keep.pair_mask(1, n);
            }
        }
        // dV_w += P^T dO: B = dO read MN-major (its rows are queries, the reduction dimension;
        // its columns the output's): step kk takes 16 queries, 16 rows (2048 bytes) further;
        // D = 128: the two 64-column panels are QO_PANEL apart. It runs while dS^T is computed.
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < KQ; kk++)
            wgmma_rs_mn<T, D>(dv, pt[kk], wgmma_descriptor(do_addr + kk * 2048, QO_PANEL, 1024));
        wgmma_commit();

        // 3. dS^T = P^T * (dP^T - Dsum[i]), packed as P^T; dK_w += dS^T Q as dV (B = Q MN-major).
        // Dropping, dP^T = dPd^T * mask / (1 - p) (as flash_backward_wgmma.cu) and P^T undropped.
        wgmma_wait<1>();
        wgmma_settle(dp);
#pragma unroll
        for (int n = 0; n < NQ; n++) {
            const float2 ds = dsum[4 * n + c];
            if constexpr (DROPOUT) {
                if (n % 4 == 0) keep.load(keep_words + n / 4, 8 * MASK_WORDS, c);
#pragma unroll
                for (int e = 0; e < 4; e++)
                    dp[n][e] = masked(dp[n][e], keep.element_mask(e >> 1, n, e & 1)) * keep_scale;
            }
            dst[n / 2][2 * (n % 2)] = pack2<T>(s[n][0] * (dp[n][0] - ds.x), s[n][1] * (dp[n][1] - ds.y));
            dst[n / 2][2 * (n % 2) + 1] = pack2<T>(s[n][2] * (dp[n][2] - ds.x), s[n][3] * (dp[n][3] - ds.y));
        }
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < KQ; kk++)
            wgmma_rs_mn<T, D>(dk, dst[kk], wgmma_descriptor(q_addr + kk * 2048, QO_PANEL, 1024));
        wgmma_commit();
        // dS^T into shared memory, row = the key's place in the block, 64 w + 16 wq + g (+ 8);
        // column block n (queries 8 n .. + 7) is 16-byte chunk n % 8 of panel n / 8. A warp's
        // stores of one n: 8 rows whose chunks the swizzle sends to 8 different bank groups.
        // (4 c | the swizzled offset, whose low 4 bits are 0: the code ptxas fits in 255 registers
        // at D = 64 with dropout, where + spilled.)
#pragma unroll
        for (int n = 0; n < NQ; n++) {
            unsigned char *panel = ds_tile + (n / 8) * SW_DS_PANEL;
            *reinterpret_cast<uint32_t *>(panel + (swizzled_offset(ds_row, n % 8) | 4 * c)) = dst[n / 2][2 * (n % 2)];
            *reinterpret_cast<uint32_t *>(panel + (swizzled_offset(ds_row + 8, n % 8) | 4 * c)) =
                dst[n / 2][2 * (n % 2) + 1];
        }
    }
};
#endif  // WGMMA_AVAILABLE

// PERSISTENT (head dim 64, neither causal nor deterministic): one CTA per SM walks
// the blocks blockIdx.x, + gridDim.x, ... (every block the same length without the causal
// mask). K and V are double-buffered (block j's in buffer j % 2; + 32 KiB of shared memory,
// 197 KiB in all): the next block's are loaded as soon as a block starts, since the other
// buffer's last reader (the previous block's last dQ product) has finished by then. The Q /
// dO ring counts query tiles across blocks, so the last two tiles of a block load the next
// block's first two; dK and dV are written while all of those copies land. Each block's
// products are the one-block-per-CTA kernel's, in the same order: the same bits.
template <typename T, int D, bool DETERMINISTIC, bool DROPOUT, bool PERSISTENT>
__global__ void __launch_bounds__(SW_THREADS, 1)
    flash_backward_swapab_kernel(const __grid_constant__ CUtensorMap q_map, const __grid_constant__ CUtensorMap kv_map,
                                 const __grid_constant__ CUtensorMap do_map, const __grid_constant__ CUtensorMap dq_map,
                                 const __grid_constant__ BwdArgs a, const KeyBlockOrder order, float scale) {
#if WGMMA_AVAILABLE
    static_assert(D == 64 || D == 128, "head dims 64 and 128");
    static_assert(!PERSISTENT || (D == 64 && !DETERMINISTIC), "persistent: d 64, not deterministic");
    using Tile = SwapabTile<D>;
    constexpr int BLOCK_M = Tile::BLOCK_M, PANELS = Tile::PANELS, QO_PANEL = Tile::QO_PANEL;
    constexpr int KV_BYTES = Tile::KV_BYTES, QO_BYTES = Tile::QO_BYTES;
    constexpr int KV_BUFFERS = PERSISTENT ? 2 : 1;
    constexpr int QUERY_PARTS = 2 * PANELS;  // TMA copies of a query tile: Q's panels, dO's
    constexpr int NQ = BLOCK_M / 8;   // accumulator column blocks of S^T and dP^T (8 queries each)
    constexpr int KQ = BLOCK_M / 16;  // A fragments of P^T and dS^T (16 queries each)
    extern __shared__ unsigned char smem_raw[];
    unsigned char *k_tile0 = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
    unsigned char *v_tile0 = k_tile0 + KV_BYTES;
    unsigned char *q_tiles = v_tile0 + KV_BYTES;       // two stages
    unsigned char *do_tiles = q_tiles + 2 * QO_BYTES;  // two stages
    unsigned char *ds_tile = do_tiles + 2 * QO_BYTES;  // dS^T, [key][query], panels of 64 queries
    unsigned char *dq_stage = ds_tile + Tile::DS_BYTES;  // dQ of a query tile, floats
    float *stats = reinterpret_cast<float *>(dq_stage + Tile::DQ_BYTES);  // two stages of STATS_FLOATS
    // The dropout bit matrices (KeyMaskBits), [warpgroup][64 keys][MASK_WORDS]; 16-byte aligned.
    uint32_t *mask_bits = reinterpret_cast<uint32_t *>(stats + 2 * Tile::STATS_FLOATS);
    // PERSISTENT: the second K, V buffer after everything else (1024-byte aligned: what comes
    // before it is a multiple of 1 KiB at D = 64).
    unsigned char *kv_tiles1 = reinterpret_cast<unsigned char *>(mask_bits) + Tile::MASK_BYTES;
    static_assert(!PERSISTENT || (4 * QO_BYTES + Tile::DS_BYTES + Tile::DQ_BYTES + 2 * Tile::STATS_FLOATS * 4 +
                                  Tile::MASK_BYTES) % 1024 == 0,
                  "the second K, V buffer must start 1024-byte aligned");

    // mbarriers: a K and V buffer landed; a stage's Q, dO, statistics landed
    __shared__ uint64_t kv_full[KV_BUFFERS], qdo_full[2];

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warpgroup = warp / 4, wq = warp % 4;
    const int g = lane / 4, c = lane % 4;
    const int bh_count = a.batch * a.heads, seq = a.seq;
    const int total_blocks = order.key_blocks * bh_count;
    const float scale_log2 = scale * LOG2E;
    // Persistent: this CTA's blocks and its query tiles (every block has the same steps).
    const int cta_blocks = PERSISTENT ? (total_blocks - (int)blockIdx.x + (int)gridDim.x - 1) / (int)gridDim.x : 1;
    const int stats_row = flash_tile_stats_row(seq);  // a head's row of the tile statistics (flash_kernels.cuh)

    // The block this CTA runs j-th, and what the kernel needs of it.
    struct Block {
        int key_block, bh, b, h, k0, m_start, steps;
    };
    auto block_at = [&](int j) {
        const FlashBlock blk = flash_key_block_at((int)blockIdx.x + j * (int)gridDim.x, order.key_blocks, bh_count,
                                                  order.group_heads);
        // (FlashBlock is the forward's, block_order.h: here its query_block field is the key block.)
        Block w;
        w.key_block = blk.query_block, w.bh = blk.bh, w.b = blk.bh / a.heads, w.h = blk.bh % a.heads;
        w.k0 = w.key_block * SW_BLOCK_N;
        // Causal, the block starts at its diagonal query tile (k0 is a multiple of BLOCK_M).
        w.m_start = a.causal ? w.k0 : 0;
        w.steps = (seq - w.m_start + BLOCK_M - 1) / BLOCK_M;
        return w;
    };
    auto k_tile_of = [&](int j) { return PERSISTENT && (j & 1) ? kv_tiles1 : k_tile0; };

    // Part `part` of the CTA's query tile t (PERSISTENT: block t / steps, its step t % steps;
    // else the one block's step t; `running` is the CTA's j-th block, the one it runs now) into
    // stage t % 2. A tile is QUERY_PARTS TMA copies (Q's 64-column panels, then dO's), each
    // arriving on the stage's mbarrier with its bytes; the part of Q's panel 0 also brings the
    // tile's statistics (two bulk copies of BLOCK_M floats). In the loop, part p is issued by
    // lane 0 of warp p % 2 of warpgroup p / 2 (spreading the issuing threads, which wait until
    // the TMA unit takes each copy). Columns: head h's q, k, v at h * 3d, + d, + 2d in qkv; its
    // dO at h * d.
    auto load_query_part = [&](const Block &running, int j, int t, int part) {
        const int jt = PERSISTENT ? t / running.steps : 0;  // (persistent: every block has the same steps)
        const Block w = PERSISTENT && jt != j ? block_at(jt) : running;
        const int step = t - jt * running.steps;
        uint64_t *bar = &qdo_full[t % 2];
        const int row = w.m_start + step * BLOCK_M, panel = part % PANELS;
        if (part < PANELS) {
            mbarrier_arrive_expect_tx(bar, QO_PANEL + (panel == 0 ? Tile::STATS_FLOATS * 4 : 0));
            tma_load_3d(q_tiles + (t % 2) * QO_BYTES + panel * QO_PANEL, &q_map, w.h * 3 * D + 64 * panel, w.b, row,
                        bar);
            if (panel == 0) {
                float *stage_stats = stats + (t % 2) * Tile::STATS_FLOATS;
                const float *lse_log2_row = a.tile_stats + (int64_t)w.bh * stats_row;
                const float *dsum_row = lse_log2_row + (int64_t)bh_count * stats_row;
                bulk_load_1d(stage_stats, lse_log2_row + row, BLOCK_M * 4, bar);
                bulk_load_1d(stage_stats + BLOCK_M, dsum_row + row, BLOCK_M * 4, bar);
            }
        } else {
            mbarrier_arrive_expect_tx(bar, QO_PANEL);
            tma_load_3d(do_tiles + (t % 2) * QO_BYTES + panel * QO_PANEL, &do_map, w.h * D + 64 * panel, w.b, row,
                        bar);
        }
    };
    const Block first = block_at(0);
    // The CTA's query tiles: the one block's steps, or PERSISTENT every block's.
    const int cta_tiles = first.steps * cta_blocks;
    if (threadIdx.x == 0) {
        for (int i = 0; i < KV_BUFFERS; i++) mbarrier_init(&kv_full[i], 1);
        mbarrier_init(&qdo_full[0], QUERY_PARTS), mbarrier_init(&qdo_full[1], QUERY_PARTS);
        fence_shared_for_wgmma();  // the initialised barriers, for the TMA unit
        load_key_value_tiles<D>(k_tile0, k_tile0 + KV_BYTES, &kv_map, &kv_full[0], first.h, first.b, first.k0,
                                SW_KV_PANEL);
        for (int t = 0; t < 2 && t < cta_tiles; t++)
            for (int part = 0; part < QUERY_PARTS; part++) load_query_part(first, 0, t, part);
    }
    __syncthreads();  // the barriers are initialised

    // The staged dQ of the tile starting at q0 into the accumulator (DETERMINISTIC: stored into
    // slice key_block, matrix key_block * batch * heads + bh of dq_map's): lane 0 of warps 2
    // and 3 of warpgroup w add its panels 2 w and 2 w + 1 (32 columns each). D = 64: the
    // warpgroup's queries q0 + 64 w .. + 63, columns 0..63 (none if they all lie past seq);
    // D = 128: queries q0 .. + 63, columns 64 w .. + 63. Rows past seq are clipped by the TMA.
    auto add_dq_tile = [&](const Block &w, int q0) {
        if (lane != 0 || wq < 2) return;
        const int half = wq - 2, panel = 2 * warpgroup + half;
        const int col = D == 64 ? 32 * half : 64 * warpgroup + 32 * half;
        const int row = D == 64 ? q0 + 64 * warpgroup : q0;
        if (row >= seq) return;
        const float *staged = reinterpret_cast<const float *>(dq_stage + panel * DQ_STAGE_PANEL);
        if constexpr (DETERMINISTIC)
            tma_store_3d(&dq_map, col, row, w.key_block * bh_count + w.bh, staged);
        else
            tma_reduce_add_3d(&dq_map, col, row, w.bh, staged);
    };

    constexpr int MASK_WORDS = Tile::MASK_WORDS;
    uint32_t *wg_mask_bits = mask_bits + warpgroup * 64 * MASK_WORDS;
    const uint32_t drop_threshold = dropout_threshold(a.p_drop);
    const float keep_scale = DROPOUT ? dropout_keep_scale(a.p_drop) : 1.0f;
    const uint64_t group_step = 32 * 4 * attention_key_blocks(seq);
    const uint32_t ds_addr = smem_addr(ds_tile);
    int tile = 0;  // the CTA's query tiles so far: the Q / dO ring's count
#pragma unroll 1
    for (int j = 0; j < cta_blocks; j++) {
        const Block w = PERSISTENT && j > 0 ? block_at(j) : first;
        const int b = w.b, h = w.h, k0 = w.k0, m_start = w.m_start, steps = w.steps;
        const int key0 = k0 + 64 * warpgroup;  // this warpgroup's first key
        const QkvView view = {(int64_t)a.batch * a.qkv_row, (int64_t)b * a.qkv_row + (int64_t)h * 3 * D};
        unsigned char *k_tile = k_tile_of(j);
        // PERSISTENT: the next block's K and V into the other buffer, whose readers (the last
        // block's products) all finished before the barrier that ended its last tile.
        if (PERSISTENT && threadIdx.x == 0 && j + 1 < cta_blocks) {
            const Block next = block_at(j + 1);
            unsigned char *k_next = k_tile_of(j + 1);
            load_key_value_tiles<D>(k_next, k_next + KV_BYTES, &kv_map, &kv_full[(j + 1) % KV_BUFFERS], next.h,
                                    next.b, next.k0, SW_KV_PANEL);
        }
        // Dropout (DROPOUT): the warpgroup's bit matrix; drop_group, the Philox group of this
        // lane's first query of the step, attention_dropout_group(global bh, q0 + lane, key0 /
        // 64, wq, seq) (global bh: the head's index in the unsharded layer, HeadRange); of the
        // query 32 further group_step more (4 groups per key block, key_blocks per query).
        const uint64_t drop_group = attention_dropout_group(a.drop.global_bh(b, h), m_start + lane, key0 / 64, wq, seq);

        // dK and dV of keys key0 + 16 wq + g (+ 8): wgmma accumulators of 64 keys x D columns.
        float dk[D / 8][4], dv[D / 8][4];
        zero_key_accumulators(dk, dv);

        const uint32_t k_addr = smem_addr(k_tile), v_addr = smem_addr(k_tile + KV_BYTES);
        const int j_first = key0 + 16 * wq + g;  // this thread's keys: j_first and j_first + 8
        // Steps 1 to 3 of each tile (SwapabStepMath; the fields in its order).
        SwapabStepMath<T, D, DROPOUT> math = {k_addr, v_addr, ds_tile, wg_mask_bits, warpgroup, warpgroup, wq, g, c,
                                              key0, j_first, 64 * warpgroup + 16 * wq + g, seq, scale_log2, keep_scale,
                                              drop_threshold, group_step, drop_group};
        mbarrier_wait(&kv_full[j % KV_BUFFERS], (j / KV_BUFFERS) & 1);
#pragma unroll 1
        for (int step = 0; step < steps; step++, tile++) {
            const int q0 = m_start + step * BLOCK_M;
            mbarrier_wait(&qdo_full[tile % 2], (tile / 2) & 1);
            const uint32_t q_addr = smem_addr(q_tiles + (tile % 2) * QO_BYTES);
            const uint32_t do_addr = smem_addr(do_tiles + (tile % 2) * QO_BYTES);

            // 1 - 3: S^T, dP^T, P^T, dV, dS^T, dK; dV and dK still in flight, dS^T stored.
            float s[NQ][4], dp[NQ][4];
            uint32_t pt[KQ][4], dst[KQ][4];
            math.products(a, q0, q_addr, do_addr, stats + (tile % 2) * Tile::STATS_FLOATS, s, dp, pt, dst, dk, dv);
            bulk_wait_read();  // (the threads that added dQ) the staging buffer is free again
            fence_shared_for_wgmma();
            __syncthreads();  // dS^T complete: dQ needs both warpgroups' keys

            // 4. dQ = dS K over the block's 128 keys: A = dS (queries x keys) read MN-major from
            // dS^T (keys are its rows), B = K read MN-major; step kk takes 16 keys, 16 rows (2048
            // bytes) further in both. D = 64: warpgroup w's queries are dS^T's panel w, all 64
            // columns K's one panel; D = 128: the one dS^T panel, K's panel w.
            float dq[8][4];
            const uint32_t ds_panel = D == 64 ? warpgroup * SW_DS_PANEL : 0;
            const uint32_t k_panel = D == 64 ? 0 : warpgroup * SW_KV_PANEL;
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < SW_BLOCK_N / 16; kk++)
                wgmma_ss<T, 64, 1, 1>(dq, wgmma_descriptor(ds_addr + ds_panel + kk * 2048, SW_DS_PANEL, 1024),
                                      wgmma_descriptor(k_addr + k_panel + kk * 2048, SW_KV_PANEL, 1024), kk > 0);
            wgmma_commit();
            wgmma_wait<0>();
            wgmma_settle(dv);
            wgmma_settle(dk);
            wgmma_settle(dq);
            wgmma_settle(pt);  // the fragments stay untouched until their products have landed
            wgmma_settle(dst);

            // 5. dQ (times the scale) staged: rows 16 wq + g (+ 8) of the warpgroup's 64, columns
            // 64 w + 8 n + 2 c - panels 2 w and 2 w + 1 (D = 64: the warpgroup's queries, all
            // columns; D = 128: its columns). At D = 128 the threads of odd g store their column
            // blocks in the order n ^ 2 (flash_backward_wgmma.cu says why).
            stage_dq_rows(dq_stage, dq, 16 * wq + g, 64 * warpgroup, D == 128 && (g & 1), scale, c);
            fence_shared_for_wgmma();  // the staged dQ, for the TMA unit
            // 6. Both warpgroups are done with this tile: its Q, dO and statistics stage is free,
            // dS^T may be overwritten, dQ is staged.
            __syncthreads();
            add_dq_tile(w, q0);  // it is added while the next tile runs
            // The CTA's next-but-one tile (PERSISTENT: perhaps the next block's) into the stage.
            if (lane == 0 && wq < 2 && 2 * warpgroup + wq < QUERY_PARTS && tile + 2 < cta_tiles)
                load_query_part(w, j, tile + 2, 2 * warpgroup + wq);
        }
        // dK (scaled) and dV (dropping: times 1 / (1 - p)) of this thread's keys into dqkv's k
        // and v slots (PERSISTENT: while the next block's first copies land).
        write_dk_dv_rows<T>(static_cast<T *>(a.dqkv), view, dk, dv, j_first, seq, scale, keep_scale);
    }
    bulk_wait_all();  // before the block's shared memory goes away
#else
    (void)q_map, (void)kv_map, (void)do_map, (void)dq_map, (void)a, (void)order, (void)scale;
    __trap();
#endif
}

// Shared memory of a launch: the tile's, and PERSISTENT the second K, V buffer.
template <int D, bool PERSISTENT>
constexpr size_t swapab_smem() {
    return SwapabTile<D>::SMEM + (PERSISTENT ? 2 * SwapabTile<D>::KV_BYTES : 0);
}
static_assert(swapab_smem<64, true>() <= 227 * 1024, "Hopper's limit per block");

// One instantiation of the kernel, its shared-memory limit set on first use; `ctas` CTAs
// (without PERSISTENT, one per block).
template <typename T, int D, bool DETERMINISTIC, bool DROPOUT, bool PERSISTENT = false>
void launch_kernel(const BwdArgs &a, const KeyBlockOrder &order, const BackwardTensorMaps &maps, int ctas) {
    constexpr size_t smem = swapab_smem<D, PERSISTENT>();
    allow_dynamic_smem<flash_backward_swapab_kernel<T, D, DETERMINISTIC, DROPOUT, PERSISTENT>>(smem);
    flash_backward_swapab_kernel<T, D, DETERMINISTIC, DROPOUT, PERSISTENT>
        <<<ctas, SW_THREADS, smem>>>(maps.q, maps.kv, maps.d_o, maps.dq, a, order, 1.0f / sqrtf((float)D));
    CHECK_LAUNCH();
}

}  // namespace

size_t flash_backward_swapab_smem_bytes(int head_dim) {
    return head_dim == 128 ? swapab_smem<128, false>() : swapab_smem<64, true>();
}

int flash_backward_swapab_slice_keys(void) { return SW_BLOCK_N; }

template <typename T, int D>
void flash_backward_swapab(const BwdArgs &a, AttentionCausalOrder causal_order, int persistent_ctas) {
    constexpr int BLOCK_M = SwapabTile<D>::BLOCK_M;
    if (!a.tile_stats) DIE("flash attention backward: the swapAB kernel needs the prepare pass's tile statistics");
    const int bh_count = a.batch * a.heads, key_blocks = ceil_div(a.seq, SW_BLOCK_N);
    if ((int64_t)key_blocks * bh_count > INT32_MAX)
        DIE("flash attention backward: %d key blocks x %d heads is more blocks than one launch takes", key_blocks,
            bh_count);
    const KeyBlockOrder order = flash_backward_key_order(a.seq, D, bh_count, SW_BLOCK_N, a.causal,
                                                         causal_order == ATTENTION_CAUSAL_HEAVY_FIRST);
    // Q and dO in boxes of BLOCK_M tokens, K and V of 128 (tokens past seq read as zeros); dQ's
    // accumulator, deterministic one per 128 keys ([slices * batch * heads][seq][D] floats).
    const int slices = a.deterministic ? (int)ceil_div(a.seq, SW_BLOCK_N) : 1;
    const BackwardTensorMaps maps = backward_tensor_maps<T>(a, D, BLOCK_M, SW_BLOCK_N, slices * bh_count);
    const bool dropping = a.p_drop > 0.0f;
    const int blocks = key_blocks * bh_count;
    if (persistent_ctas > 0 && flash_backward_swapab_runs_persistent(D, a.causal, a.deterministic)) {
        if constexpr (D == 64) {  // one CTA per SM at most (its shared memory allows one), one per block
            const int ctas = flash_persistent_grid(blocks, persistent_ctas);
            if (dropping) launch_kernel<T, D, false, true, true>(a, order, maps, ctas);
            else launch_kernel<T, D, false, false, true>(a, order, maps, ctas);
        }
    } else if (a.deterministic && dropping) {
        launch_kernel<T, D, true, true>(a, order, maps, blocks);
    } else if (a.deterministic) {
        launch_kernel<T, D, true, false>(a, order, maps, blocks);
    } else if (dropping) {
        launch_kernel<T, D, false, true>(a, order, maps, blocks);
    } else {
        launch_kernel<T, D, false, false>(a, order, maps, blocks);
    }
}

int flash_backward_swapab_runs_persistent(int head_dim, int causal, int deterministic) {
    return head_dim == 64 && !causal && !deterministic;
}

template void flash_backward_swapab<__half, 64>(const BwdArgs &, AttentionCausalOrder, int);
template void flash_backward_swapab<__half, 128>(const BwdArgs &, AttentionCausalOrder, int);
template void flash_backward_swapab<__nv_bfloat16, 64>(const BwdArgs &, AttentionCausalOrder, int);
template void flash_backward_swapab<__nv_bfloat16, 128>(const BwdArgs &, AttentionCausalOrder, int);
