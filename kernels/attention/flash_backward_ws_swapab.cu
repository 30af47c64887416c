// Flash attention backward on Hopper, head dim 128, warp-specialised with the scores computed
// transposed in tiles of 80 queries (attention.h's ATTENTION_BACKWARD_WS: on, when not dropping;
// 80, always; never deterministic). FlashAttention-3's own layout at this head dim (Shah et al.,
// "FlashAttention-3", 2024; its hopper/ backward with kBlockM = 80, kBlockN = 128, SdP_swapAB
// and dQ_swapAB, dK and dV from registers), written anew on this repository's wgmma, TMA and
// mbarrier wrappers; FlashAttention-3 has no dropout, this one has (DROPOUT: the forward's mask
// bit for bit, drawn transposed as flash_backward_swapab.cu draws it - flash_backward_common.cuh's
// "dropout, transposed" - a word of 32 queries at a time, while the tile's S^T and dP^T run).
//
// Why another d 128 backward. flash_backward_ws.cu computes S and dP with the queries as the
// wgmma's M dimension (64 queries a tile); dV += P^T dO and dK += dS^T Q need P and dS
// transposed, which registers cannot give, so both go through shared memory and are read back
// as MN-major operands - two 16 KiB round trips a tile and two SS products (SS: a wgmma reading
// both operands from shared memory; RS: its A operand from registers). Computing S^T = K
// Q^T and dP^T = V dO^T instead (keys as M, flash_backward_swapab.cu's "swapAB") leaves P^T and
// dS^T in registers in exactly the layout of a wgmma's A operand, so dV and dK run from
// registers (RS) and only dS goes to shared memory, for dQ. With the keys as M the queries are
// the N dimension and need not be a multiple of 64 (a multiple of 16: they are the K of dV's
// and dK's products): 80 queries a tile, FlashAttention-3's choice at d 128 (not varied here;
// causal, also 64 as ATTENTION_BACKWARD_CAUSAL_TILE=64: SaTile below), in its 240-register
// consumers (S^T and dP^T 40 floats each, dK and dV 64 each).
// dQ = dS K has the queries as M, so it is computed transposed too, dQ^T = K^T dS^T (M = the
// head dim, N = 80 queries). (flash_backward_swapab.cu at d 128 keeps 64 queries and no
// producer warpgroup; the branch swapws had both but 64 queries and dQ over each consumer's
// own keys, and was slower: docs/worklog.md.)
//
// Block: 128 keys of one head, 384 threads = three warpgroups, as flash_backward_ws.cu. (Query
// tiles of 80 below; in the causal tiles of ATTENTION_BACKWARD_CAUSAL_TILE=64 read 64 for 80,
// and 4 steps of 16 queries for 5.)
//   warpgroup 0, the producer (setmaxnreg.dec to 24 registers):
//     warp 0 (one thread): K and V once; per query tile Q, dO (two 64-column panels of 80 rows
//       each, TMA) and the tile's lse log2(e) and Dsum (two 1-D bulk copies of 80 floats from
//       the prepare pass's padded tile statistics) into a two-stage ring (qdo_full / qdo_empty).
//     warps 1 and 2 (one thread each): consumer 0's and 1's dQ columns - wait until the consumer
//       has staged them (dq_full), two TMA reduce-adds of 80 rows x 32 floats, wait until the
//       TMA unit has read them, hand the buffer back (dq_empty). One buffer per consumer (two
//       would not fit beside everything else; the reduction is read long before the next
//       tile's dQ is ready).
//     warp 3: nothing (it exits after setmaxnreg, which the whole warpgroup must execute).
//   warpgroups 1 and 2, consumers cw = 0, 1 (setmaxnreg.inc to 240): keys [64 cw, 64 cw + 64) of
//     the block. Per query tile of 80 queries:
//       S^T = K_cw Q^T, dP^T = V_cw dO^T     SS, 64 keys x 80 queries, two commit groups
//       P^T = exp2(S^T scale log2(e) - lse log2(e)) (edge tiles masked), packed as A fragments
//       dV_cw += P^T dO                     RS, B = dO MN-major (5 steps of 16 queries)
//       dS^T = P^T (dP^T - Dsum), packed; stored to the dS tile TRANSPOSED (stmatrix.trans):
//         dS is [query][key], a 64-key panel per consumer, K-major for dQ^T's B
//       both consumers' dS stored (named barrier DS_READY)
//       dQ^T[64 cw + .., :] = K_{:, 64 cw ..}^T dS^T   SS, A = K's panel cw MN-major, B = dS,
//         over all 128 keys (8 steps); then dK_cw += dS^T Q (RS, B = Q MN-major)
//       dQ^T (times the scale) staged as dQ rows for the TMA once dV and dQ have landed, while
//         dK runs; the stage's Q, dO and statistics released once dK has.
//     dS is single-buffered as in flash_backward_ws.cu: DS_FREE + c says the other consumer's dQ
//     of the tile before has read panel c.
//
// Shared memory (1024-byte aligned panels; + 1 KiB for the alignment): K, V 32 KiB each; Q, dO 2
// stages x 20 KiB each; dS 20 KiB; dQ staged, 40 KiB; statistics 2 stages x 640 bytes; the
// dropout bits 4 KiB: 210 KiB (with 64-query tiles 182 KiB).
//
// Registers (ptxas -v, sm_90a, CUDA 13.0, bytes spilled): one block per CTA 0, dropping 20;
// persistent 36, dropping 44-52; causal 0, dropping 56; causal in 64-query tiles 0 (with the mask
// drawn a tile ahead, while dK ran, the dropping kernels spilled 4-16, 40-48 and 16-24 bytes).
// Without dropout the consumers spill nothing (checked with the producer's code removed: the
// persistent kernel's 36 bytes are its producer's, at 24 registers, as in flash_backward_ws.cu);
// where the dropping kernels' bytes sit was not checked.
//
// Measured (H200, 2026-11-30, docs/results.md#h200-seventeenth; b 4, h 32, s 2048, TFLOP/s, in
// turns against flash_backward_ws.cu's 64-query tiles): 482-520 against 435-482, causal 387-398
// against 378-384; dropping 355-371 against 392-399 - slower, so a dropping backward runs the
// 64-query kernel by default (ATTENTION_BACKWARD_WS=80 runs this one). That dropping figure is
// the mask drawn a tile ahead, while dK ran; drawn beside S^T and dP^T instead, in the shadow of
// their wgmmas, 363-372 against 389-404 (docs/results.md#h200-nineteenth): still slower. Causal
// in 64-query tiles (ATTENTION_BACKWARD_CAUSAL_TILE=64) 385-398 against 382-400: even, so causal
// keeps 80. Consumer 1 skipping its all-masked first tile (as flash_backward_ws.cu does) was
// tried on both tile sizes and not kept: even with 64-query tiles, 3-7% slower with 80 (whose
// causal kernel then spilled 12-20 bytes).
#include "common/gpu/cuda_check.h"
#include "kernels/attention/block_order.h"
#include "kernels/attention/flash_backward_common.cuh"
#include "kernels/attention/flash_common.cuh"
#include "kernels/attention/flash_kernels.cuh"
#include "kernels/attention/hopper_pipeline.cuh"
#include "kernels/attention/wgmma.cuh"
#include "kernels/device_utils.cuh"

namespace {

constexpr int SA_D = 128;        // the head dim
constexpr int SA_BLOCK_N = 128;  // keys per block
constexpr int SA_THREADS = 384;  // producer + two consumers
constexpr int SA_PRODUCER_REGS = 24;
constexpr int SA_CONSUMER_REGS = 240;
// The block's register pool at launch (65536 / 384, rounded down to a multiple of 8), which only
// setmaxnreg redistributes: 24 to the producer, 240 to each consumer.
constexpr int SA_LAUNCH_REGS = 65536 / SA_THREADS / 8 * 8;
static_assert(128 * (SA_PRODUCER_REGS + 2 * SA_CONSUMER_REGS) <= SA_THREADS * SA_LAUNCH_REGS, "the block's pool");

constexpr int SA_KV_PANEL = SA_BLOCK_N * 128;  // bytes of a 64-column panel of K or V (128 rows)
constexpr int SA_KV_BYTES = 2 * SA_KV_PANEL;
// DROPOUT: the dropout bit matrices (flash_backward_common.cuh's "dropout, transposed"), two
// buffers (by tile parity) x two consumers x 64 keys x 4 words (of 32 queries; 3 drawn for 80
// queries: the 64-query tiles never drop). One buffer would do - every read of a tile's bits
// comes before its DS_READY barrier, the next tile's draw after it - but the kernel was first
// tested and measured with two.
constexpr int SA_MASK_STRIDE = 4;
constexpr int SA_MASK_BYTES = 2 * 2 * 64 * SA_MASK_STRIDE * 4;

// The query tile's sizes: BLOCK_M queries a tile, 80 (FlashAttention-3's choice at d 128) or,
// when causal and not dropping as ATTENTION_BACKWARD_CAUSAL_TILE=64 (attention.h), 64
// (FlashAttention-3's causal choice; measured even with 80, so not the default). Causal, a block's first tile is the
// one holding its first key k0 (a multiple of 128): a tile of 80 starts k0 mod 80 = 0, 48, 16,
// 64 or 32 queries before it (32 on average), rows whose scores are all masked; a tile of 64
// starts at k0.
template <int BLOCK_M>
struct SaTile {
    static_assert(BLOCK_M % 16 == 0 && BLOCK_M <= 96, "a multiple of 16 queries, at most 3 mask words");
    static constexpr int M = BLOCK_M;
    static constexpr int NQ = BLOCK_M / 8;   // accumulator column blocks of S^T, dP^T, dQ^T (8 queries each)
    static constexpr int KQ = BLOCK_M / 16;  // A fragments of P^T and dS^T (16 queries each)
    static constexpr int QO_PANEL = BLOCK_M * 128;  // bytes of a 64-column panel of Q or dO (BLOCK_M rows)
    static constexpr int DS_PANEL = BLOCK_M * 128;  // ... of dS: BLOCK_M queries x one consumer's 64 keys
    static constexpr int DQ_PANEL = BLOCK_M * 128;  // ... of the staged dQ: BLOCK_M rows x 32 floats
    static constexpr int QO_BYTES = 2 * QO_PANEL;
    static constexpr int DS_BYTES = 2 * DS_PANEL;
    static constexpr int DQ_BYTES = 4 * DQ_PANEL;
    static constexpr int STATS_FLOATS = 2 * BLOCK_M;         // lse log2(e), then Dsum, of one stage's queries
    static constexpr int MASK_WORDS = (BLOCK_M + 31) / 32;  // DROPOUT: words of 32 queries drawn a key
    static_assert(QO_PANEL % 1024 == 0 && DQ_PANEL % 1024 == 0, "panels on the swizzle's 1024-byte period");
    static_assert(MASK_WORDS <= SA_MASK_STRIDE, "the mask's row");
    // (NQ and KQ named here too, so that builds for GPUs without wgmma, whose kernel body is a
    // stub, do not stop on nvcc's "declared but never referenced".)
    static_assert(NQ == 2 * KQ, "two accumulator column blocks a fragment");

    static constexpr size_t smem_bytes() {
        return 2 * SA_KV_BYTES + 4 * QO_BYTES + DS_BYTES + DQ_BYTES + 2 * STATS_FLOATS * 4 + SA_MASK_BYTES + 1024;
    }
};
using SaWide = SaTile<80>;    // the default
using SaCausal = SaTile<64>;  // causal, as ATTENTION_BACKWARD_CAUSAL_TILE=64
static_assert(SaWide::smem_bytes() + 256 <= 227 * 1024 && SaCausal::smem_bytes() <= SaWide::smem_bytes(),
              "Hopper's limit per block");

[[maybe_unused]] constexpr int DS_READY = 3;  // both dS panels of the tile stored
[[maybe_unused]] constexpr int DS_FREE = 4;   // + c: the other consumer has finished reading dS panel c
[[maybe_unused]] constexpr int MASK_READY = 6;  // + c: consumer c's four warps have drawn the tile's bits

// The mbarriers (flash_backward_common.cuh), one dQ buffer per consumer.
using SaBarriers = WsBackwardBarriers<1>;

#if WGMMA_AVAILABLE
// Four 8 x 8 matrices of 16-bit values from registers to shared memory, each transposed: the
// register matrix's row g, columns 2 c and 2 c + 1 (lane 4 g + c's register i) land in rows 2 c
// and 2 c + 1, column g, of memory matrix i, whose row r lane 8 i + r addresses (16 bytes).
__device__ __forceinline__ void stmatrix_x4_trans(uint32_t row_addr, const uint32_t (&r)[4]) {
    asm volatile("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(row_addr),
                 "r"(r[0]), "r"(r[1]), "r"(r[2]), "r"(r[3])
                 : "memory");
}
#endif

// PERSISTENT as flash_backward_ws.cu: one CTA per SM runs blocks blockIdx.x, + gridDim.x, ...;
// the producer loads a block's K and V once the consumers are done with the previous block's.
// Not when CAUSAL. CAUSAL is a template parameter: as runtime tests the causal mask cost the plain
// kernel 32 bytes of spills (ptxas -v); compiled into the causal kernel only, neither spills.
template <typename T, typename Tile, bool PERSISTENT, bool CAUSAL, bool DROPOUT>
__global__ void __launch_bounds__(SA_THREADS, 1)
    flash_backward_ws_swapab_kernel(const __grid_constant__ CUtensorMap q_map,
                                    const __grid_constant__ CUtensorMap kv_map,
                                    const __grid_constant__ CUtensorMap do_map,
                                    const __grid_constant__ CUtensorMap dq_map, const __grid_constant__ BwdArgs a,
                                    const KeyBlockOrder order, float scale) {
#if WGMMA_AVAILABLE
    static_assert(!(PERSISTENT && CAUSAL), "persistent only when not causal");
    constexpr int D = SA_D;
    extern __shared__ unsigned char smem_raw[];
    unsigned char *k_tile = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
    unsigned char *v_tile = k_tile + SA_KV_BYTES;
    unsigned char *q_tiles = v_tile + SA_KV_BYTES;        // two stages
    unsigned char *do_tiles = q_tiles + 2 * Tile::QO_BYTES;  // two stages
    unsigned char *ds_tile = do_tiles + 2 * Tile::QO_BYTES;  // dS, [query][key], a panel per consumer
    unsigned char *dq_stage = ds_tile + Tile::DS_BYTES;      // a tile's dQ, floats, four panels of 32 columns
    float *stats = reinterpret_cast<float *>(dq_stage + Tile::DQ_BYTES);  // two stages of Tile::STATS_FLOATS
    uint32_t *mask_bits = reinterpret_cast<uint32_t *>(stats + 2 * Tile::STATS_FLOATS);  // [buffer][consumer][key][word]
    __shared__ SaBarriers bars;

    const int warpgroup = threadIdx.x / 128, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int bh_count = a.batch * a.heads, seq = a.seq;
    const int total_blocks = order.key_blocks * bh_count;
    const BlockCount count = {bh_count, seq, total_blocks};  // for the producer's helpers

    if (threadIdx.x == 0) bars.init();
    __syncthreads();

    if (warpgroup == 0) {  // ---- the producer
        warpgroup_release_registers<SA_PRODUCER_REGS>();
        if (lane != 0 || warp == 3) return;
        if (warp == 0) {
            // K and V of each block; Q, dO (two 64-column panels of Tile::M rows each) and the
            // statistics of each of its query tiles (the statistics' rows are padded with zeros
            // to a multiple of 128 and of 80, so that neither tile leaves its row:
            // flash_tile_stats_row).
            produce_key_and_query_tiles<D, SA_BLOCK_N, Tile::M, PERSISTENT>(
                a, order, count, CAUSAL, k_tile, v_tile, SA_KV_PANEL, q_tiles, do_tiles, Tile::QO_PANEL, stats,
                &q_map, &kv_map, &do_map, &bars.kv_full, &bars.kv_empty, bars.qdo_full, bars.qdo_empty);
        } else {
            // Warp 1 + cw: consumer cw's dQ columns, one buffer (two would not fit beside
            // everything else; the reduction is read long before the next tile's dQ is ready):
            // dq_full[cw] and dq_empty[cw] are that buffer's barriers.
            const int cw = warp - 1;
            reduce_dq_tiles<SA_BLOCK_N, Tile::M, 1, PERSISTENT>(order, count, CAUSAL, cw, dq_stage, Tile::DQ_BYTES,
                                                                Tile::DQ_PANEL, &dq_map, bars.dq_full[cw],
                                                                bars.dq_empty[cw]);
        }
        return;
    }

    // ---- the consumers
    warpgroup_claim_registers<SA_CONSUMER_REGS>();
    const int cw = warpgroup - 1, wq = warp % 4, g = lane / 4, c = lane % 4;
    const float scale_log2 = scale * LOG2E;
    const uint32_t k_addr = smem_addr(k_tile), v_addr = smem_addr(v_tile), ds_addr = smem_addr(ds_tile);
    const uint32_t drop_threshold = dropout_threshold(a.p_drop);
    const float keep_scale = DROPOUT ? dropout_keep_scale(a.p_drop) : 1.0f;
    // The Philox group number's step from a query to the query 32 further (4 groups per 64-key
    // block, attention_key_blocks per query).
    const uint64_t drop_group_step = 32 * 4 * attention_key_blocks(seq);
    // stmatrix's row addresses: lane 8 i + r writes row r of matrix i of each group of four, i.e.
    // dS row (query) 16 kk + 8 (i / 2) + r, the 8 keys 16 wq + 8 (i % 2) of this consumer's 64
    // (16-byte chunk 2 wq + i % 2 of the panel's row, swizzled); + kk 16 rows (2048 bytes), which
    // leaves the row's phase mod 8 alone.
    const int st_row = 8 * ((lane / 8) / 2) + lane % 8;
    const uint32_t st_addr = ds_addr + cw * Tile::DS_PANEL + swizzled_offset(st_row, 2 * wq + (lane / 8) % 2);
    // dQ^T staging (rows of the accumulator = head-dim columns 64 cw + 16 wq + g (+ 8 r), columns =
    // queries 8 n + 2 c + e) into dQ rows: column 16 wq + 8 r + g of the consumer's 64 is panel 2 cw
    // + wq / 2, float g % 4 of 16-byte chunk 4 (wq % 2) + 2 r + g / 4; query q's row has the
    // swizzle phase q % 8 = 2 c + e, so the chunk is dq_phase ^ (2 r + e) with dq_phase below. A
    // warp's store of one (n, r, e): 8 chunks x 4 floats, 32 different banks.
    const uint32_t dq_phase = (uint32_t)((4 * (wq % 2) + g / 4) ^ (2 * c));
    unsigned char *dq_rows = dq_stage + (2 * cw + wq / 2) * Tile::DQ_PANEL + 2 * c * 128 + 4 * (g % 4);
    int tile = 0;  // the CTA's query tiles so far: the rings' count (stages, dQ buffer, mask bits)
#pragma unroll 1
    for (int idx = blockIdx.x, j = 0; idx < total_blocks; idx += gridDim.x, j++) {
        const KeyBlockWork w = key_block_work<SA_BLOCK_N, Tile::M>(idx, order, bh_count, seq, CAUSAL);
        const int k0 = w.k0, bh = w.bh, b = bh / a.heads, h = bh % a.heads, steps = w.steps;
        const int key0 = k0 + 64 * cw;                // this consumer's first key
        const int j_first = key0 + 16 * wq + g;        // this thread's keys: j_first, j_first + 8
        float dk[D / 8][4], dv[D / 8][4];
        zero_key_accumulators(dk, dv);
        // DROPOUT: the bits of tile t (the CTA's count), starting at query q, into buffer t % 2 by
        // this consumer's four warps (warp wq the keys 8 n + 2 wq + e of its 64, lane L the queries q +
        // 32 r + L), while the tile's S^T and dP^T run on the tensor cores, a word (32 queries) at a
        // time (draw_mask_bits's 12 flag registers of three words at once did not fit beside the
        // two accumulators in flight; a word at a time the dropping kernels spill 20-56 bytes);
        // read after the barrier MASK_READY + cw.
        const uint64_t drop_bh = a.drop.global_bh(b, h);
        auto draw_tile_bits = [&](int t, int q) {
            draw_mask_bits_by_word<Tile::MASK_WORDS, SA_MASK_STRIDE>(
                mask_bits + ((t % 2) * 2 + cw) * 64 * SA_MASK_STRIDE,
                attention_dropout_group(drop_bh, q + lane, key0 / 64, wq, seq), drop_group_step, wq, a.keys, a.offset,
                drop_threshold);
        };

        mbarrier_wait(&bars.kv_full, j & 1);
#pragma unroll 1
        for (int step = 0; step < steps; step++, tile++) {
            const int s_stage = tile % 2, q0 = w.m_start + step * Tile::M;
            mbarrier_wait(&bars.qdo_full[s_stage], (tile / 2) & 1);
            const uint32_t q_addr = smem_addr(q_tiles + s_stage * Tile::QO_BYTES);
            const uint32_t do_addr = smem_addr(do_tiles + s_stage * Tile::QO_BYTES);
            const float2 *lse_log2 = reinterpret_cast<const float2 *>(stats + s_stage * Tile::STATS_FLOATS);
            const float2 *dsum = lse_log2 + Tile::M / 2;

            // S^T = K_cw Q^T and dP^T = V_cw dO^T, one commit group each: acc = X_cw Y^T with X (K or
            // V) and Y (Q or dO) K-major; step kk takes 16 of the D columns (panel kk / 4); the
            // consumer's keys start 64 rows (8192 bytes) into each panel of X.
            auto key_rows_product = [&](float(&acc)[Tile::NQ][4], uint32_t x_addr, uint32_t y_addr) {
#pragma unroll
                for (int kk = 0; kk < D / 16; kk++) {
                    const uint32_t kv = (kk / 4) * SA_KV_PANEL + cw * 64 * 128 + (kk % 4) * 32;
                    const uint32_t qo = (kk / 4) * Tile::QO_PANEL + (kk % 4) * 32;
                    wgmma_ss<T, Tile::M>(acc, wgmma_descriptor(x_addr + kv, 0, 1024),
                                            wgmma_descriptor(y_addr + qo, 0, 1024), kk > 0);
                }
                wgmma_commit();
            };
            float s[Tile::NQ][4], dp[Tile::NQ][4];
            wgmma_fence();
            key_rows_product(s, k_addr, q_addr);
            key_rows_product(dp, v_addr, do_addr);
            if constexpr (DROPOUT) draw_tile_bits(tile, q0);
            // DROPOUT: this thread's two keys' words of the tile's bits (KeyMaskBits), once all four
            // warps have drawn them.
            // (Key row 0's words; row 1's are 8 keys, 8 * SA_MASK_STRIDE words, further: keep.load's stride.)
            const uint32_t *keep_words = mask_bits + ((tile % 2) * 2 + cw) * 64 * SA_MASK_STRIDE +
                                         (16 * wq + g) * SA_MASK_STRIDE;
            if constexpr (DROPOUT) named_barrier_sync(MASK_READY + cw, 128);

            // P^T: s[n][e] is key j_first + 8 (e / 2), query q0 + 8 n + 2 c + e % 2. Keys or queries
            // past seq, and causal keys after their query, are masked (-inf, so P = 0) on the tiles
            // at the edges or the diagonal; the test is per warp (its 16 keys).
            wgmma_wait<1>();
            wgmma_settle(s);
            if (q0 + Tile::M > seq || key0 + 16 * wq + 16 > seq || (CAUSAL && key0 + 16 * wq + 15 > q0)) {
#pragma unroll
                for (int n = 0; n < Tile::NQ; n++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const int i = q0 + 8 * n + 2 * c + (e & 1), jj = j_first + 8 * (e >> 1);
                        if (i >= seq || jj >= seq || (CAUSAL && jj > i)) s[n][e] = -INFINITY;
                    }
            }
            uint32_t pt[Tile::KQ][4];
#pragma unroll
            for (int n = 0; n < Tile::NQ; n++) {
                transposed_probabilities<T>(s[n], lse_log2[4 * n + c], scale_log2, pt[n / 2], n % 2);
            }
            // DROPOUT: Pd^T = P^T * mask for dV (its factor 1 / (1 - p) comes at the end); P^T itself
            // stays for dS^T.
            KeyMaskBits keep;
            uint32_t pd[Tile::KQ][4];
            if constexpr (DROPOUT) {
#pragma unroll
                for (int n = 0; n < Tile::NQ; n++) {
                    if (n % 4 == 0) keep.load(keep_words + n / 4, 8 * SA_MASK_STRIDE, c);
                    pd[n / 2][2 * (n % 2)] = pt[n / 2][2 * (n % 2)] & keep.pair_mask(0, n);
                    pd[n / 2][2 * (n % 2) + 1] = pt[n / 2][2 * (n % 2) + 1] & keep.pair_mask(1, n);
                }
            }
            // dV_cw += P^T dO (dropping, Pd^T): B = dO MN-major, 16 queries (2048 bytes) a step, panels
            // QO_PANEL apart.
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < Tile::KQ; kk++)
                wgmma_rs_mn<T, D>(dv, DROPOUT ? pd[kk] : pt[kk], wgmma_descriptor(do_addr + kk * 2048, Tile::QO_PANEL, 1024));
            wgmma_commit();

            // dS^T = P^T (dP^T - Dsum), packed as P^T. P is read back from its 16-bit fragments (the
            // value dV was given): the float P^T held through dV's product as well pushed the
            // consumers past their 240 registers (spills, and ptxas serialised every wgmma).
            wgmma_wait<1>();
            wgmma_settle(dp);
            uint32_t dst[Tile::KQ][4];
#pragma unroll
            for (int n = 0; n < Tile::NQ; n++) {
                const float2 ds = dsum[4 * n + c];
                if constexpr (DROPOUT) {  // dP^T = dPd^T * mask / (1 - p)
                    if (n % 4 == 0) keep.load(keep_words + n / 4, 8 * SA_MASK_STRIDE, c);
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        dp[n][e] = masked(dp[n][e], keep.element_mask(e >> 1, n, e & 1)) * keep_scale;
                }
                const float2 p0 = unpack2<T>(pt[n / 2][2 * (n % 2)]), p1 = unpack2<T>(pt[n / 2][2 * (n % 2) + 1]);
                dst[n / 2][2 * (n % 2)] = pack2<T>(p0.x * (dp[n][0] - ds.x), p0.y * (dp[n][1] - ds.y));
                dst[n / 2][2 * (n % 2) + 1] = pack2<T>(p1.x * (dp[n][2] - ds.x), p1.y * (dp[n][3] - ds.y));
            }
            // dS into the consumer's panel, transposed ([query][key]), once the other consumer's dQ
            // of the tile before has read it: fragment kk's four registers are the 8 x 8 matrices
            // (keys 8 (i % 2), queries 16 kk + 8 (i / 2)) that stmatrix_x4_trans stores as rows of
            // queries.
            if (tile > 0) named_barrier_sync(DS_FREE + cw, 256);
#pragma unroll
            for (int kk = 0; kk < Tile::KQ; kk++) stmatrix_x4_trans(st_addr + kk * 2048, dst[kk]);
            fence_shared_for_wgmma();
            named_barrier_sync(DS_READY, 256);  // dQ needs both consumers' dS

            // dQ^T[64 cw .. + 63][queries] = K^T dS^T over the 128 keys: A = K's panel cw read MN-major
            // (its rows are keys, the reduction), B = dS K-major (its rows are queries, keys
            // contiguous; panel kk / 4); 16 keys a step. Then dK_cw += dS^T Q as dV. Two groups, dQ's
            // first, so that dQ is staged while dK runs.
            float dq[Tile::NQ][4];
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < SA_BLOCK_N / 16; kk++)
                wgmma_ss<T, Tile::M, 1, 0>(
                    dq, wgmma_descriptor(k_addr + cw * SA_KV_PANEL + kk * 2048, SA_KV_PANEL, 1024),
                    wgmma_descriptor(ds_addr + (kk / 4) * Tile::DS_PANEL + (kk % 4) * 32, 0, 1024), kk > 0);
            wgmma_commit();
#pragma unroll
            for (int kk = 0; kk < Tile::KQ; kk++)
                wgmma_rs_mn<T, D>(dk, dst[kk], wgmma_descriptor(q_addr + kk * 2048, Tile::QO_PANEL, 1024));
            wgmma_commit();
            wgmma_wait<1>();
            wgmma_settle(dv);
            wgmma_settle(dq);
            wgmma_settle(pt);
            if constexpr (DROPOUT) wgmma_settle(pd);
            if (PERSISTENT && step + 1 == steps) mbarrier_arrive(&bars.kv_empty);  // dQ read K last
            if (PERSISTENT || step + 1 < steps) named_barrier_arrive(DS_FREE + (1 - cw), 256);

            // dQ (times the scale) staged once the TMA unit has read the tile before's.
            if (tile > 0) mbarrier_wait(&bars.dq_empty[cw][0], (tile - 1) & 1);
#pragma unroll
            for (int n = 0; n < Tile::NQ; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int r = e >> 1, odd = e & 1;
                    const uint32_t at = (8 * n + odd) * 128 + 16 * (dq_phase ^ (uint32_t)(2 * r + odd));
                    // accumulator element e: head-dim row + 8 r, query 8 n + 2 c + odd
                    *reinterpret_cast<float *>(dq_rows + at) = dq[n][e] * scale;
                }
            fence_shared_for_wgmma();
            mbarrier_arrive(&bars.dq_full[cw][0]);

            wgmma_wait<0>();
            wgmma_settle(dk);
            wgmma_settle(dst);
            mbarrier_arrive(&bars.qdo_empty[s_stage]);
        }

        const QkvView view = {(int64_t)a.batch * a.qkv_row, (int64_t)b * a.qkv_row + (int64_t)h * 3 * D};
        write_dk_dv_rows<T>(static_cast<T *>(a.dqkv), view, dk, dv, j_first, seq, scale, keep_scale);
        if constexpr (!PERSISTENT) break;
    }
    if constexpr (PERSISTENT) named_barrier_sync(DS_FREE + cw, 256);
#else
    (void)q_map, (void)kv_map, (void)do_map, (void)dq_map, (void)a, (void)order, (void)scale;
    __trap();
#endif
}

// One instantiation on `ctas` CTAs, its shared-memory limit set on first use; Q, dO and dQ's
// tensor maps in boxes of Tile::M rows, K and V of 128.
template <typename T, typename Tile, bool PERSISTENT, bool CAUSAL, bool DROPOUT>
void launch_kernel(const BwdArgs &a, const KeyBlockOrder &order, float scale, int ctas) {
    constexpr size_t smem = Tile::smem_bytes();
    const int bh_count = a.batch * a.heads;
    const BackwardTensorMaps m = backward_tensor_maps<T>(a, SA_D, Tile::M, SA_BLOCK_N, bh_count, Tile::M);
    allow_dynamic_smem<flash_backward_ws_swapab_kernel<T, Tile, PERSISTENT, CAUSAL, DROPOUT>>(smem);
    flash_backward_ws_swapab_kernel<T, Tile, PERSISTENT, CAUSAL, DROPOUT>
        <<<ctas, SA_THREADS, smem>>>(m.q, m.kv, m.d_o, m.dq, a, order, scale);
}

}  // namespace

size_t flash_backward_ws_swapab_smem_bytes(void) { return SaWide::smem_bytes(); }

template <typename T>
void flash_backward_ws_swapab(const BwdArgs &a, AttentionCausalOrder causal_order, int persistent_ctas,
                              int causal_tile) {
    if (a.deterministic) DIE("flash attention backward: the 80-query swapAB kernel is not deterministic");
    if (a.causal && persistent_ctas > 0)
        DIE("flash attention backward: the 80-query swapAB kernel is not persistent when causal");
    if (!a.tile_stats) DIE("flash attention backward: the 80-query swapAB kernel needs the tile statistics");
    if (causal_tile != 80 && causal_tile != 64)
        DIE("flash attention backward: the 80-query swapAB kernel's causal tile is 80 or 64 queries, not %d",
            causal_tile);
    const int bh_count = a.batch * a.heads, key_blocks = ceil_div(a.seq, SA_BLOCK_N);
    if ((int64_t)key_blocks * bh_count > INT32_MAX)
        DIE("flash attention backward: %d key blocks x %d heads is more blocks than one launch takes", key_blocks,
            bh_count);
    const KeyBlockOrder order = flash_backward_key_order(a.seq, SA_D, bh_count, SA_BLOCK_N, a.causal,
                                                         causal_order == ATTENTION_CAUSAL_HEAVY_FIRST);
    const float scale = 1.0f / sqrtf((float)SA_D);
    const int blocks = key_blocks * bh_count;
    const bool dropping = a.p_drop > 0.0f;
    // Causal in 64-query tiles only when not dropping (dropping, this kernel runs only as
    // ATTENTION_BACKWARD_WS=80, measured in 80-query tiles).
    if (a.causal && dropping) launch_kernel<T, SaWide, false, true, true>(a, order, scale, blocks);
    else if (a.causal && causal_tile == 80) launch_kernel<T, SaWide, false, true, false>(a, order, scale, blocks);
    else if (a.causal) launch_kernel<T, SaCausal, false, true, false>(a, order, scale, blocks);
    else if (persistent_ctas > 0 && dropping)
        launch_kernel<T, SaWide, true, false, true>(a, order, scale, flash_persistent_grid(blocks, persistent_ctas));
    else if (persistent_ctas > 0)
        launch_kernel<T, SaWide, true, false, false>(a, order, scale, flash_persistent_grid(blocks, persistent_ctas));
    else if (dropping) launch_kernel<T, SaWide, false, false, true>(a, order, scale, blocks);
    else launch_kernel<T, SaWide, false, false, false>(a, order, scale, blocks);
    CHECK_LAUNCH();
}

template void flash_backward_ws_swapab<__half>(const BwdArgs &, AttentionCausalOrder, int, int);
template void flash_backward_ws_swapab<__nv_bfloat16>(const BwdArgs &, AttentionCausalOrder, int, int);
