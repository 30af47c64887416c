// Flash attention backward on Hopper, head dim 128, warp-specialised (ATTENTION_BACKWARD_WS,
// attention.h): flash_backward_wgmma.cu's math with FlashAttention-3's division of labour and
// register budget. The default at head dim 128 when dropping and not deterministic (attention.h;
// without dropout flash_backward_ws_swapab.cu, FlashAttention-3's 80-query tiles, is faster: 482-520
// against 435-482 TFLOP/s, docs/results.md#h200-seventeenth, and with it this kernel's 64-query
// tiles were measured as ATTENTION_BACKWARD_WS=64). Before that, the default wherever it ran: on an H200
// 434-474 TFLOP/s against flash_backward_wgmma.cu's 422-438, 389-400 against 361-372 with
// dropout, 364-382 against 350-358 causal (docs/results.md#h200-seventh); causal 382-387
// against 371-384 since consumer 1 skips its fully masked tiles (below; #h200-tenth); when not
// causal, persistent (PERSISTENT, below): 467-484 against 419-471 one block per CTA, 388-409
// against 380-400 with dropout (#h200-eleventh).
//
// Why. flash_backward_wgmma.cu's two warpgroups each hold dK and dV of their 64 keys (128
// floats a thread) for the whole block and also issue the copies, prefetch lse and Dsum into
// registers and issue the dQ reductions: ptxas takes 251-255 of the 255 registers a thread of a
// 256-thread block may have, and every idea that added per-thread state lost (chapter 04's
// "three ideas for the d = 128 backward that did not pay"). FlashAttention-3 keeps the same
// accumulators in 240 registers beside a producer warpgroup of 24 (setmaxnreg). This kernel
// does the same, so that the consumers carry nothing but the math:
//
// Block: 128 keys of one head, 384 threads = three warpgroups.
//   warpgroup 0, the producer (setmaxnreg.dec to 24 registers):
//     warp 0 (one thread): K and V once; per query tile Q, dO (two 64-column panels each, TMA)
//       and the tile's lse log2(e) and Dsum (two 1-D bulk copies of 64 floats from the prepare
//       pass's padded tile statistics, flash_kernels.cuh) into a two-stage ring: qdo_full[s]
//       counts the bytes, qdo_empty[s] the 256 consumer threads done with the stage.
//     warps 1 and 2 (one thread each): the dQ reductions of consumer 0 and 1 - wait until the
//       consumer has staged its dQ columns (dq_full), issue two TMA reduce-adds of 64 rows x 32
//       floats, wait until the TMA unit has read them, hand the buffer back (dq_empty).
//       The staging buffer is double-buffered (by tile parity), so a consumer never waits for
//       the reduction of the tile it has just staged.
//     warp 3: nothing (it exits after setmaxnreg, which the whole warpgroup must execute).
//   warpgroups 1 and 2, consumers cw = 0, 1 (setmaxnreg.inc to 240): keys [64 cw, 64 cw + 64)
//     of the block, per query tile of 64 queries exactly the math of flash_backward_wgmma.cu
//     with dQ's columns split between its two warpgroups (its COLUMN_HALVES scheme): S = Q
//     K_cw^T, dP = dO V_cw^T; P (dropped) into its panel of the P tile; dV_cw += P^T dO; dS into
//     its panel of the dS tile; dQ[:, 64 cw, + 64] = dS K over both consumers' dS, then dK_cw +=
//     dS^T Q; dQ staged while dK's product runs (in this order dQ lands first: the order that
//     made this kernel faster than flash_backward_wgmma.cu). lse and Dsum are read from the
//     stage's shared memory where they are used (no registers held for them across the tile).
//     (In the code c is lane % 4, as in every kernel here.)
//
// How the consumers meet. No __syncthreads after the start (the producer's threads have left).
//   - Before dQ (it reads both dS panels): named barrier DS_READY, 256 threads.
//   Causal, on each block's first query tile consumer 1's keys are all masked: it skips its
//   products there but keeps every barrier and mbarrier (the loop's comment says how).
//   - Before a consumer overwrites its dS panel with the next tile's, the other one must have
//     finished reading it (its dQ of this tile): named barrier DS_FREE + c, on which the other
//     consumer only arrives (bar.arrive) once its dQ has landed and consumer c waits (bar.sync)
//     right before its dS stores - so the end of a tile costs neither a full barrier nor a wait
//     where there is other work to do. (Its own P panel only it reads; its dV has landed by then.)
//   - Q, dO and the statistics of a stage: every consumer thread arrives on qdo_empty once its
//     last product of the tile (dK, reading Q) has landed.
//
// Registers (ptxas -v and the SASS, sm_90a, CUDA 13.0, fp16 and bf16 alike): 168 at launch
// (65536 / 384), no spills; the consumers use R0-R237 of their 240, the producer R0-R23 of its
// 24. Two things had to go for that: the dQ staging offsets, which the compiler hoisted out of
// the tile loop as sixteen live registers (now a row base and one chunk phase, below), and the
// edge tiles' mask as three tests per score, whose 32 outcomes ptxas kept in registers (now one
// bound per row). Before those two: 84 bytes spilled at 240 (32 even at 256). The persistent
// kernel's producer spills 40 bytes at its 24 registers (the block walk's indices, stored once
// per block and read a few times per tile, by one thread that mostly waits); its consumers
// none.
//
// Shared memory (1024-byte aligned panels; + 1 KiB for the alignment): K, V 32 KiB each; Q, dO
// 2 stages x 16 KiB each; P, dS 16 KiB each; dQ staged 2 buffers x 32 KiB; statistics 2 stages
// x 512 bytes: 226 KiB of Hopper's 227 (ws_smem_bytes).
//
// Non-deterministic only (dQ by TMA reductions, in whatever order the blocks arrive); the
// deterministic backward runs flash_backward_wgmma.cu (attention.cu). Dropout and the causal
// mask as there (flash_common.cuh's mask, drawn per row).
#include "common/gpu/cuda_check.h"
#include "kernels/attention/block_order.h"
#include "kernels/attention/flash_backward_common.cuh"
#include "kernels/attention/flash_common.cuh"
#include "kernels/attention/flash_kernels.cuh"
#include "kernels/attention/hopper_pipeline.cuh"
#include "kernels/attention/wgmma.cuh"
#include "kernels/device_utils.cuh"

namespace {

constexpr int WS_D = 128;         // the head dim
constexpr int WS_BLOCK_N = 128;   // keys per block
constexpr int WS_BLOCK_M = 64;    // queries per step
constexpr int WS_THREADS = 384;   // producer + two consumers
constexpr int WS_PRODUCER_REGS = 24;
constexpr int WS_CONSUMER_REGS = 240;
// The block's register pool at launch (65536 / 384, rounded down to a multiple of 8: what ptxas
// -v reports for the kernel) is only redistributed by setmaxnreg.
constexpr int WS_LAUNCH_REGS = 65536 / WS_THREADS / 8 * 8;
static_assert(128 * (WS_PRODUCER_REGS + 2 * WS_CONSUMER_REGS) <= WS_THREADS * WS_LAUNCH_REGS, "the block's pool");
static_assert(WS_PRODUCER_REGS <= WS_LAUNCH_REGS && WS_CONSUMER_REGS >= WS_LAUNCH_REGS, "who gives, who takes");

constexpr int WS_PANELS = WS_D / 64;           // 64-column panels of K, V, Q, dO
constexpr int WS_KV_PANEL = WS_BLOCK_N * 128;  // bytes of a panel of K or V (128 rows)
constexpr int WS_QO_PANEL = WS_BLOCK_M * 128;  // ... of Q or dO (64 rows)
constexpr int WS_PS_PANEL = WS_BLOCK_M * 128;  // ... of P or dS: 64 queries x one consumer's 64 keys
constexpr int WS_KV_BYTES = WS_PANELS * WS_KV_PANEL;
constexpr int WS_QO_BYTES = WS_PANELS * WS_QO_PANEL;
constexpr int WS_PS_BYTES = 2 * WS_PS_PANEL;
constexpr int WS_DQ_BYTES = 4 * DQ_STAGE_PANEL;  // dQ of a tile: 64 rows x 128 floats, four panels of 32
constexpr int WS_STATS_FLOATS = 2 * WS_BLOCK_M;  // lse log2(e), then Dsum, of one stage's queries
constexpr int WS_STATS_BYTES = WS_STATS_FLOATS * 4;

// K, V, two stages of Q and dO, P, dS, two dQ buffers, two stages of statistics, alignment.
constexpr size_t ws_smem_bytes() {
    return 2 * WS_KV_BYTES + 4 * WS_QO_BYTES + 2 * WS_PS_BYTES + 2 * WS_DQ_BYTES + 2 * WS_STATS_BYTES + 1024;
}
// (The static shared memory, the 13 mbarriers below, also counts against the 227 KiB.)
static_assert(ws_smem_bytes() + 256 <= 227 * 1024, "Hopper's limit per block");

// Named barriers (0 is __syncthreads', 1 and 2 warpgroup_barrier's for consumer 0 and 1).
[[maybe_unused]] constexpr int DS_READY = 3;  // both dS panels of the tile stored
[[maybe_unused]] constexpr int DS_FREE = 4;   // + c: the other consumer has finished reading dS panel c

// The mbarriers: K and V landed; a stage's Q, dO and statistics landed / released by the
// consumers; a consumer's dQ buffer staged / read by the TMA unit.
using WsBarriers = WsBackwardBarriers<2>;  // two dQ buffers per consumer

// PERSISTENT (ATTENTION_BACKWARD_PERSISTENT, attention.h; not when causal): one CTA per SM runs
// the blocks blockIdx.x, + gridDim.x, + 2 gridDim.x, ... of block_order.h's order, and its
// producer loads a block's K and V as soon as the consumers have finished the last products
// that read the previous block's (kv_empty), while they still write its dK and dV into dqkv -
// where one block per CTA leaves the tensor cores idle from its last product until the next
// CTA's first Q, K and V have landed. The rings (Q / dO stages, dQ buffers, dS panels) run on
// across blocks: their indices and phases count the CTA's query tiles (tile), not the block's
// (step). Not when causal: its blocks differ in length (the first key block of a head has 32
// query tiles at s = 2048, the last 2), and a fixed assignment left SMs idle (causal backward
// 333-338 against 376-383 TFLOP/s, H200; one block per CTA lets the hardware hand out the next
// block to whichever SM is free).
template <typename T, bool PERSISTENT>
__global__ void __launch_bounds__(WS_THREADS, 1)
    flash_backward_ws_kernel(const __grid_constant__ CUtensorMap q_map, const __grid_constant__ CUtensorMap kv_map,
                             const __grid_constant__ CUtensorMap do_map, const __grid_constant__ CUtensorMap dq_map,
                             const __grid_constant__ BwdArgs a, const KeyBlockOrder order, float scale) {
#if WGMMA_AVAILABLE
    constexpr int D = WS_D;
    extern __shared__ unsigned char smem_raw[];
    unsigned char *k_tile = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
    unsigned char *v_tile = k_tile + WS_KV_BYTES;
    unsigned char *q_tiles = v_tile + WS_KV_BYTES;        // two stages
    unsigned char *do_tiles = q_tiles + 2 * WS_QO_BYTES;  // two stages
    unsigned char *p_tile = do_tiles + 2 * WS_QO_BYTES;   // dropped probabilities, [query][key], a panel per consumer
    unsigned char *ds_tile = p_tile + WS_PS_BYTES;        // dS, [query][key], a panel per consumer
    unsigned char *dq_stages = ds_tile + WS_PS_BYTES;     // two buffers of a tile's dQ, floats
    float *stats = reinterpret_cast<float *>(dq_stages + 2 * WS_DQ_BYTES);  // two stages of WS_STATS_FLOATS
    __shared__ WsBarriers bars;

    const int warpgroup = threadIdx.x / 128, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int bh_count = a.batch * a.heads, seq = a.seq;
    const int total_blocks = order.key_blocks * bh_count;
    const BlockCount count = {bh_count, seq, total_blocks};  // for the producer's helpers

    if (threadIdx.x == 0) bars.init();
    __syncthreads();  // the last block-wide barrier: from here on the warpgroups go their own ways

    if (warpgroup == 0) {  // ---- the producer
        warpgroup_release_registers<WS_PRODUCER_REGS>();
        if (lane != 0 || warp == 3) return;
        if (warp == 0) {
            // K and V of each block; Q, dO and the statistics of each of its 64-query tiles.
            produce_key_and_query_tiles<D, WS_BLOCK_N, WS_BLOCK_M, PERSISTENT>(
                a, order, count, a.causal, k_tile, v_tile, WS_KV_PANEL, q_tiles, do_tiles, WS_QO_PANEL, stats,
                &q_map, &kv_map, &do_map, &bars.kv_full, &bars.kv_empty, bars.qdo_full, bars.qdo_empty);
        } else {
            // Warp 1 + cw: consumer cw's dQ columns, double-buffered (by tile parity), so that a
            // consumer never waits for the reduction of the tile it has just staged.
            const int cw = warp - 1;
            reduce_dq_tiles<WS_BLOCK_N, WS_BLOCK_M, 2, PERSISTENT>(order, count, a.causal, cw, dq_stages, WS_DQ_BYTES,
                                                                   DQ_STAGE_PANEL, &dq_map, bars.dq_full[cw],
                                                                   bars.dq_empty[cw]);
        }
        return;
    }

    // ---- the consumers
    warpgroup_claim_registers<WS_CONSUMER_REGS>();
    const int cw = warpgroup - 1, wq = warp % 4, g = lane / 4, c = lane % 4;
    const float scale_log2 = scale * LOG2E;
    const bool dropping = a.p_drop > 0.0f;
    const uint32_t drop_threshold = dropout_threshold(a.p_drop);
    const float keep_scale = dropout_keep_scale(a.p_drop);
    const uint32_t k_addr = smem_addr(k_tile), v_addr = smem_addr(v_tile);
    const uint32_t p_addr = smem_addr(p_tile), ds_addr = smem_addr(ds_tile);
    int tile = 0;  // the CTA's query tiles so far: the rings' count
#pragma unroll 1
    for (int idx = blockIdx.x, j = 0; idx < total_blocks; idx += gridDim.x, j++) {
        const KeyBlockWork w = key_block_work<WS_BLOCK_N, WS_BLOCK_M>(idx, order, bh_count, seq, a.causal);
        const int k0 = w.k0, bh = w.bh, m_start = w.m_start, steps = w.steps;
        const int b = bh / a.heads, h = bh % a.heads;
        const int key0 = k0 + 64 * cw;  // this consumer's first key
        const uint64_t drop_bh = a.drop.global_bh(b, h);

        // dK and dV of keys key0 + 16 wq + g (+ 8): wgmma accumulators of 64 keys x D columns.
        float dk[D / 8][4], dv[D / 8][4];
        zero_key_accumulators(dk, dv);

        mbarrier_wait(&bars.kv_full, j & 1);
    #pragma unroll 1
        for (int step = 0; step < steps; step++, tile++) {
            const int s_stage = tile % 2, q0 = m_start + step * WS_BLOCK_M;
            mbarrier_wait(&bars.qdo_full[s_stage], (tile / 2) & 1);
            const uint32_t q_addr = smem_addr(q_tiles + s_stage * WS_QO_BYTES);
            const uint32_t do_addr = smem_addr(do_tiles + s_stage * WS_QO_BYTES);
            const float *stage_stats = stats + s_stage * WS_STATS_FLOATS;  // lse log2(e), then Dsum

            // Causal, the block's first query tile (q0 = k0) comes before every key of consumer 1
            // (k0 + 64 ..): the mask hides them all, so P and dS are 0 there and consumer 1 has
            // nothing to add to dV or dK, nor its dS panel to dQ. It skips its S, dP, dV and dK products
            // and its softmax on that tile and stages its dQ columns from consumer 0's dS alone; both
            // consumers' dQ products read dS panel 0 only (panel 1 was never written for this tile):
            // half of that tile's products (a quarter of the 128 x 128 diagonal block), about 3% of
            // a causal backward's at s = 2048. Adding the skipped zeros would change no bit. The
            // test: the tile's last query (q0 + 63) comes before consumer 1's first key (k0 + 64),
            // which under the mask (q0 >= k0) holds at the first tile only.
            static_assert(WS_BLOCK_M == 64 && WS_BLOCK_N == 128, "64-query tiles, a consumer's 64 keys");
            const bool upper_keys_masked = a.causal && k0 + 64 > q0 + WS_BLOCK_M - 1;
            const bool skip = upper_keys_masked && cw == 1;
            if (!skip) {
                // S = Q K_c^T and dP = dO V_c^T, two groups: step kk takes 16 of the D columns (panel
                // kk / 4); the consumer's keys start 64 rows (8192 bytes) into each panel of K and V.
                float s[8][4], dp[8][4];
                wgmma_backward_scores<T, D>(s, dp, q_addr, do_addr, k_addr, v_addr, cw * 64 * 128, WS_QO_PANEL,
                                            WS_KV_PANEL);

                // While the tensor cores work: the dropout mask of this thread's queries 16 wq + g (+ 8)
                // and keys 8n + 2c (+ 1) of the consumer's 64.
                TileDropout dropped;
                if (dropping)
                    dropped =
                        query_rows_dropout(drop_bh, q0 + 16 * wq + g, seq, key0 / 64, a.keys, a.offset, drop_threshold);

                // P = exp(S scale - lse) (kept in s) and Pd = P * mask, into the consumer's panel of the
                // P tile (flash_backward_wgmma.cu: the same steps). Masked scores (query i or key j past
                // seq, or j > i when causal) become -inf, on edge and diagonal tiles only. The mask is
                // written as one bound per row - key j is kept iff j < limit, limit = 0 for i >= seq,
                // else seq or, causal, min(seq, i + 1) - so that each score takes one compare against
                // a register and a select: written as the three tests per score, ptxas kept the 32
                // outcomes as predicates moved into registers and spilled others to make room.
                wgmma_wait<1>();
                wgmma_settle(s);
                const int i_first = q0 + 16 * wq + g;  // this thread's rows: i_first and i_first + 8
                if (i_first + 8 >= seq || key0 + 64 > seq || (a.causal && key0 + 63 > i_first)) {
    #pragma unroll
                    for (int r = 0; r < 2; r++) {
                        const int i = i_first + 8 * r;
                        const int limit = i >= seq ? 0 : a.causal ? min(seq, i + 1) : seq;
                        const int room = limit - key0 - 2 * c;  // key 8 n + 2 c + e of the 64 kept iff 8 n + e < room
    #pragma unroll
                        for (int n = 0; n < 8; n++)
    #pragma unroll
                            for (int e = 0; e < 2; e++)
                                if (8 * n + e >= room) s[n][2 * r + e] = -INFINITY;
                    }
                }
                store_probabilities<T>(s, [&](int, int il) { return stage_stats[il]; }, scale_log2, dropping,
                                       dropped, p_tile + cw * WS_PS_PANEL, 16 * wq + g, c);
                fence_shared_for_wgmma();
                warpgroup_barrier(cw);  // the consumer's P panel is complete

                // dV_c += Pd_c^T dO, running while dS is computed.
                wgmma_fence();
                wgmma_backward_key_update<T, D>(dv, p_addr + cw * WS_PS_PANEL, WS_PS_PANEL, do_addr, WS_QO_PANEL);
                wgmma_commit();

                // dS = P * (dP - Dsum) with dP = dPd * mask / (1 - p), into the consumer's dS panel -
                // once the other consumer has read the tile before's (its dQ).
                wgmma_wait<1>();
                wgmma_settle(dp);
                if (tile > 0) named_barrier_sync(DS_FREE + cw, 256);
                store_score_gradients<T>(ds_tile + cw * WS_PS_PANEL, s, dp,
                                         [&](int, int il) { return stage_stats[WS_BLOCK_M + il]; }, dropping, dropped,
                                         keep_scale, 16 * wq + g, c);
                fence_shared_for_wgmma();
            } else if (tile > 0) {
                named_barrier_sync(DS_FREE + cw, 256);  // as above: the barrier's uses stay paired
            }
            named_barrier_sync(DS_READY, 256);  // dQ needs both consumers' dS

            // dQ[:, 64 cw, + 64] = dS K: A = dS, keys contiguous (panel kk / 4, both consumers'), B =
            // K's panel cw read transposed, 16 keys (2048 bytes) a step; then dK_cw += dS_cw^T Q, as dV.
            // Two groups, dQ's first: once it has landed (and dV's, committed before) the thread stages
            // dQ while the tensor cores still run dK.
            float dq[8][4];
            auto ds_desc = [&](int kk) {
                return wgmma_descriptor(ds_addr + (kk / 4) * WS_PS_PANEL + (kk % 4) * 32, 0, 1024);
            };
            auto kt_desc = [&](int kk) {
                return wgmma_descriptor(k_addr + cw * WS_KV_PANEL + kk * 2048, WS_KV_PANEL, 1024);
            };
            // Each path whole groups, fence to commit (a branch inside a group made ptxas serialise
            // every wgmma of the kernel: its warning C7520); skipping, dK's group is empty, so that
            // the waits below count the same groups in every path.
            if (!upper_keys_masked) {
                wgmma_fence();
    #pragma unroll
                for (int kk = 0; kk < WS_BLOCK_N / 16; kk++)
                    wgmma_ss<T, 64, 0, 1>(dq, ds_desc(kk), kt_desc(kk), kk > 0);
                wgmma_commit();
                wgmma_backward_key_update<T, D>(dk, ds_addr + cw * WS_PS_PANEL, WS_PS_PANEL, q_addr, WS_QO_PANEL);
                wgmma_commit();
            } else if (!skip) {
                wgmma_fence();
    #pragma unroll
                for (int kk = 0; kk < 64 / 16; kk++) wgmma_ss<T, 64, 0, 1>(dq, ds_desc(kk), kt_desc(kk), kk > 0);
                wgmma_commit();
                wgmma_backward_key_update<T, D>(dk, ds_addr + cw * WS_PS_PANEL, WS_PS_PANEL, q_addr, WS_QO_PANEL);
                wgmma_commit();
            } else {
                wgmma_fence();
    #pragma unroll
                for (int kk = 0; kk < 64 / 16; kk++) wgmma_ss<T, 64, 0, 1>(dq, ds_desc(kk), kt_desc(kk), kk > 0);
                wgmma_commit();
                wgmma_commit();
            }
            wgmma_wait<1>();
            wgmma_settle(dv);
            wgmma_settle(dq);
            // PERSISTENT, the block's last tile: dQ's product was the last to read K (V: dP's), so
            // the producer may load the next block's.
            if (PERSISTENT && step + 1 == steps) mbarrier_arrive(&bars.kv_empty);
            // Done with the other consumer's dS panel (dK reads only this consumer's). Persistent:
            // after every tile, the CTA's last too, and the final sync after the loop takes that last
            // arrival (rather than asking at each tile whether another block follows).
            if (PERSISTENT || step + 1 < steps) named_barrier_arrive(DS_FREE + (1 - cw), 256);

            // dQ (times the scale) staged at columns 64 cw + 8 m + 2 c (c = lane % 4) of buffer
            // step % 2, once the TMA unit has read what was staged there two tiles ago. Threads of
            // odd g store their column blocks in the order m = n ^ 2 (flash_backward_wgmma.cu: bank
            // conflicts otherwise). The address is dq_stage_offset's, taken apart so that what the
            // compiler keeps across the loop is two registers, not the sixteen offsets (hoisted out
            // of the loop, those spilled): row 16 wq + g + 8 r has the swizzle's row phase g; column
            // 8 m + 2 c' of the consumer's 64 is panel 2 c + m / 4, 16-byte chunk 2 (m % 4) + c' / 2
            // (XORed with g), byte 8 (c' % 2) of it. With m % 4 = (n % 4) ^ (odd g ? 2 : 0) the chunk
            // is chunk_phase ^ 2 (n % 4), chunk_phase = (c' / 2) ^ g ^ (odd g ? 4 : 0).
            if (tile >= 2) mbarrier_wait(&bars.dq_empty[cw][s_stage], (tile / 2 - 1) & 1);
            const bool odd_g = g & 1;
            const uint32_t chunk_phase = (uint32_t)((c >> 1) ^ g ^ (odd_g ? 4 : 0));
            unsigned char *dq_rows = dq_stages + s_stage * WS_DQ_BYTES + 2 * cw * DQ_STAGE_PANEL + (16 * wq + g) * 128 +
                                     8 * (c & 1);
    #pragma unroll
            for (int r = 0; r < 2; r++)
    #pragma unroll
                for (int n = 0; n < 8; n++) {
                    const float2 v = odd_g ? make_float2(dq[n ^ 2][2 * r], dq[n ^ 2][2 * r + 1])
                                           : make_float2(dq[n][2 * r], dq[n][2 * r + 1]);
                    const uint32_t at = (n / 4) * DQ_STAGE_PANEL + 8 * r * 128 + 16 * (chunk_phase ^ (2 * (n % 4)));
                    *reinterpret_cast<float2 *>(dq_rows + at) = make_float2(v.x * scale, v.y * scale);
                }
            fence_shared_for_wgmma();  // the staged dQ, for the TMA unit
            mbarrier_arrive(&bars.dq_full[cw][s_stage]);

            // dK has landed: this thread is done with the stage (Q, dO, statistics).
            wgmma_wait<0>();
            wgmma_settle(dk);
            mbarrier_arrive(&bars.qdo_empty[s_stage]);
        }

        // dK (scaled) and dV (dropping: times 1 / (1 - p)) of this thread's keys into dqkv's k and v slots.
        const QkvView view = {(int64_t)a.batch * a.qkv_row, (int64_t)b * a.qkv_row + (int64_t)h * 3 * D};
        write_dk_dv_rows<T>(static_cast<T *>(a.dqkv), view, dk, dv, key0 + 16 * wq + g, seq, scale, keep_scale);
        if constexpr (!PERSISTENT) break;  // one block: the compiler sees no loop
    }
    if constexpr (PERSISTENT) named_barrier_sync(DS_FREE + cw, 256);  // the other consumer's last arrival
#else
    (void)q_map, (void)kv_map, (void)do_map, (void)dq_map, (void)a, (void)order, (void)scale;
    __trap();
#endif
}

}  // namespace

size_t flash_backward_ws_smem_bytes(void) { return ws_smem_bytes(); }

template <typename T>
void flash_backward_ws(const BwdArgs &a, AttentionCausalOrder causal_order, int persistent_ctas) {
    if (a.deterministic) DIE("flash attention backward: the warp-specialised kernel is not deterministic");
    if (!a.tile_stats)
        DIE("flash attention backward: the warp-specialised kernel needs the prepare pass's tile statistics");
    const int bh_count = a.batch * a.heads, key_blocks = ceil_div(a.seq, WS_BLOCK_N);
    if ((int64_t)key_blocks * bh_count > INT32_MAX)
        DIE("flash attention backward: %d key blocks x %d heads is more blocks than one launch takes", key_blocks,
            bh_count);
    // Key blocks in the order flash_backward_wgmma.cu runs them (block_order.h).
    const KeyBlockOrder order = flash_backward_key_order(a.seq, WS_D, bh_count, WS_BLOCK_N, a.causal,
                                                         causal_order == ATTENTION_CAUSAL_HEAVY_FIRST);
    // Q and dO in boxes of 64 tokens, K and V of 128; dQ's accumulator one [seq][D] per head.
    const BackwardTensorMaps maps = backward_tensor_maps<T>(a, WS_D, WS_BLOCK_M, WS_BLOCK_N, bh_count);
    constexpr size_t smem = ws_smem_bytes();
    const float scale = 1.0f / sqrtf((float)WS_D);
    const int blocks = key_blocks * bh_count;
    if (persistent_ctas > 0) {  // at most one CTA per SM (its shared memory allows one), one per block
        const int ctas = flash_persistent_grid(blocks, persistent_ctas);
        allow_dynamic_smem<flash_backward_ws_kernel<T, true>>(smem);
        flash_backward_ws_kernel<T, true><<<ctas, WS_THREADS, smem>>>(maps.q, maps.kv, maps.d_o, maps.dq, a, order,
                                                                       scale);
    } else {
        allow_dynamic_smem<flash_backward_ws_kernel<T, false>>(smem);
        flash_backward_ws_kernel<T, false><<<blocks, WS_THREADS, smem>>>(maps.q, maps.kv, maps.d_o, maps.dq, a, order,
                                                                         scale);
    }
    CHECK_LAUNCH();
}

template void flash_backward_ws<__half>(const BwdArgs &, AttentionCausalOrder, int);
template void flash_backward_ws<__nv_bfloat16>(const BwdArgs &, AttentionCausalOrder, int);
