// Flash attention forward on Hopper: warpgroup MMA (wgmma), TMA copies and warp
// specialisation. attention.h says what it computes; wgmma.cuh explains the tensor-core
// instructions and the swizzled shared-memory layout, hopper_pipeline.cuh the copies and
// barriers. Also here: the probe that tells the dispatch (attention.cu) whether the code
// running on the GPU holds these kernels' bodies at all.
//
// Why a second forward kernel: the mma.sync one (flash_mma.cu) tops out near 275
// TFLOP/s on an H100 (d 128), because every warp must first copy each K and V fragment from
// shared memory into its own registers (ldmatrix) for the tensor cores to use it. A wgmma
// reads its B operand (and here also Q) from shared memory itself, for four warps at once,
// and runs at Hopper's full tensor-core rate: this kernel reached 564-598 TFLOP/s at d 128
// (H200, 2026-11-29, fp16, b 4, h 32, s 2048) and 628-653 since the 176-key tiles and their
// narrow last tile (2026-11-30, fp16 and bf16; docs/results.md).
//
// Block: 64 * CONSUMERS queries of one head, 1 + CONSUMERS warpgroups with different jobs
// (FlashAttention-3's layout):
//   producer (warpgroup 0): one thread issues TMA copies of Q once and of K and V tile by tile
//     into two stages each, as soon as the consumers have released a stage;
//   consumers (warpgroups 1 .. CONSUMERS, 64 query rows each): per tile of keys, S = Q K^T
//     (d / 16 wgmmas), the online softmax on S in registers (flash_common.cuh: the very step
//     the mma.sync kernel uses, since both accumulator layouts agree per warp), and O += P V
//     with P straight from the score registers as the A operand.
// The consumers never wait for each other's copies (no __syncthreads per tile) and take turns
// to issue their products (round robin; with two, "ping-pong"), so that one's softmax runs
// while another's products keep the tensor cores busy.
//
// How many consumers: 2 at head dim 128 (128 queries per block; setmaxnreg gives its consumers
// 240 registers each, and their accumulators alone need more than the 160 a third would
// leave). At head dim 64 a tile's products take half the tensor-core time of d 128 while the
// softmax costs the same, so with two consumers the tensor cores wait for softmaxes; a third
// consumer (192 queries per block, 160 registers each) keeps them fed (FlashAttention-3's
// choice at d 64). attention.cu picks 2 or 3 at d 64 (ATTENTION_D64_FORWARD, attention.h).
//
// Keys per tile (the template parameter BLOCK_N): 128, or 176 at head dim 128 when neither
// causal nor dropping (ATTENTION_FORWARD_BLOCK_N, attention.h; FlashAttention-3's kBlockN there).
// Every tile has its fixed costs - the row max and sum shuffles, rescaling the 64 output
// accumulators by alpha, the consumers' turns, the waits on barriers - which 176-key tiles
// spread over 37% more keys than 128-key ones. It fits: per consumer thread S is 88 floats, P 44
// registers, O 64 (the SASS uses registers up to R236 of the 240, and ptxas spills none); shared
// memory holds Q (32 KiB) and 2 stages x (K + V) x 176 rows x 256 bytes (176 KiB): 209 KiB with
// the alignment. 176 is no multiple of the 64 keys per dropout draw; and with the causal mask a
// query block's keys end on a multiple of 128, so its last 176-key tile is partly empty: at
// s = 2048 the wide tiles compute 7.2% more keys, about what they save per key, and measured
// even (H200, 2026-12-01, branch causal176; narrowing that tile per block made ptxas serialise
// the wgmmas). Those problems keep 128, and the 176 kernels have neither compiled in (MAY_DROP,
// MAY_BE_CAUSAL; the 128 kernels' code is unchanged). Head dim 64 (two or three consumers)
// keeps 128 as well. A row's last 176-key tile runs narrower products where few keys are left
// (LAST_N, explained at the kernel): at s = 2048, 112 keys wide (H200: fp16 624 -> 631 TFLOP/s,
// bf16 645 -> 648).
//
// The order of the blocks (block_order.h): natural, or when causal the heaviest query blocks
// first (ATTENTION_CAUSAL_ORDER, attention.h).
//
// Persistent or not (ATTENTION_FORWARD_PERSISTENT and ATTENTION_PERSISTENT_SCHEDULE,
// attention.h; the template parameter PERSISTENT): not persistent, one block per 64 * CONSUMERS
// queries of a head, and every block
// starts with its consumers waiting for Q and the first K and ends with its output written from
// registers while its tensor-core work is over - a few % of a block with 16 tiles of keys
// (H200, d 128, s 2048: 2.5% of Nsight Compute's samples wait for the first Q / K). Persistent
// (FlashAttention-3's way), one CTA per SM loops over those blocks as work tiles, and its
// producer loads the next work tile's K, Q and V while the consumers still finish the current
// one; the kernel's comment says what carries over from one work tile to the next, and how
// the CTAs get their work tiles (a fixed list, or the next one from a global counter).
//
// Dropout: each consumer draws its own masks (Philox, flash_common.cuh) between its products.
// Drawing them instead in the producer warpgroup's idle warps, a tile ahead into a shared-memory
// ring, was measured slower on the H200 and reverted (docs/worklog.md).
#include <type_traits>

#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu.h"
#include "kernels/attention/block_order.h"
#include "kernels/attention/flash_common.cuh"
#include "kernels/attention/flash_forward_common.cuh"
#include "kernels/attention/flash_kernels.cuh"
#include "kernels/attention/hopper_pipeline.cuh"
#include "kernels/attention/wgmma.cuh"
#include "kernels/device_utils.cuh"

namespace {

// Keys per tile (BLOCK_N, the kernel's template parameter): 128, or 176 at head dim 128 when
// neither causal nor dropping (the header says why).
constexpr int BLOCK_N_DEFAULT = 128, BLOCK_N_WIDE = 176;
// (maybe_unused: the stub compiled for other GPUs than sm_90a does not use it.)
[[maybe_unused]] constexpr int TURNS = 3;  // named barriers 3 .. 2 + CONSUMERS: consumer c's turn

// The block's shape for CONSUMERS consumer warpgroups: 64 queries each, one producer
// warpgroup; and how the 64K registers of the SM (one block per SM: 65536 / THREADS per
// thread at launch, rounded down to a multiple of 8) are split: the producer keeps few, the
// consumers take the rest (setmaxnreg: 24 to 256, multiples of 8; the consumers may claim at
// most what the producer gave back).
template <int CONSUMERS>
struct Shape {
    static constexpr int BLOCK_M = 64 * CONSUMERS;          // queries per block
    static constexpr int THREADS = 128 * (1 + CONSUMERS);   // 384 or 512
    static constexpr int PRODUCER_REGS = 24;
    static constexpr int CONSUMER_REGS = CONSUMERS == 2 ? 240 : 160;
    static_assert(CONSUMERS == 2 || CONSUMERS == 3, "two or three consumer warpgroups");
    static_assert(PRODUCER_REGS % 8 == 0 && CONSUMER_REGS % 8 == 0, "setmaxnreg takes multiples of 8");
    // What each thread holds at launch (what ptxas -v reports: 168 or 128), and so the block's
    // pool, which setmaxnreg only redistributes: 384 * 168 = 64512 or 512 * 128 = 65536.
    static constexpr int LAUNCH_REGS = 65536 / THREADS / 8 * 8;
    static_assert(128 * (PRODUCER_REGS + CONSUMERS * CONSUMER_REGS) <= THREADS * LAUNCH_REGS, "the block's pool");
    static_assert(CONSUMER_REGS >= LAUNCH_REGS, "the consumers claim, never give back");
    static_assert(PRODUCER_REGS <= LAUNCH_REGS, "the producer gives back, never claims");
};

// A swizzled [rows x D] tile of 16-bit values is D / 64 panels of rows x 128 bytes.
template <int D>
constexpr int tile_bytes(int rows) {
    return rows * D * 2;
}

// The block's barriers: a stage's "full" completes when its copy has landed, "empty" when
// all consumers are done with it. q_empty is the persistent kernel's only (PERSISTENT below):
// there Q is refilled for each work tile, once every consumer has issued and finished its last
// S = Q K^T of the tile before.
struct Barriers {
    uint64_t q_full, q_empty, k_full[2], v_full[2], k_empty[2], v_empty[2];
};

// Which block computes what (block_order.h): query_blocks per head, group_heads 0 (natural)
// or the heads per group of the heavy-first order; and the persistent kernel's schedule:
// static, zigzag 1 (when causal) or 0 (persistent_work_tile); dynamic (the kernel's DYNAMIC),
// handed_out, the launch's count of work tiles handed out after the first round (zeroed
// before each launch; null when static).
struct BlockOrder {
    int query_blocks, group_heads, zigzag;
    int *handed_out;
};

// A work tile: BLOCK_M queries of one (batch, head) - what one block of the non-persistent
// launch computes. Work tile `work` (0 .. query_blocks * batch * heads - 1) is the block of
// linear index `work` in block_order.h's order. With the static schedule the persistent
// kernel's CTAs take them in rounds of one tile each (block_order.h's persistent_work_tile: CTA
// i takes tile i, i + grid, ... of rounds 0, 1, ..., or when causal zig-zag, ... 2 grid - 1 - i
// in odd rounds); with the dynamic one, the next tile not yet taken, from a global counter. In
// either the tiles in flight are about the ones the non-persistent launch would run at that
// moment (heaviest first when causal).
struct WorkTile {
    int b, h, bh;  // batch entry, head, b * heads + h
    int q0;        // its first query
    int tiles;     // tiles of keys it visits (>= 1: q0 < seq)
};

template <int BLOCK_M, int BLOCK_N>
__device__ __forceinline__ WorkTile work_tile_at(int work, const BlockOrder &order, const FwdArgs &a) {
    const FlashBlock blk = flash_block_at(work, order.query_blocks, a.batch * a.heads, order.group_heads);
    WorkTile w;
    w.bh = blk.bh, w.b = blk.bh / a.heads, w.h = blk.bh % a.heads;
    w.q0 = blk.query_block * BLOCK_M;
    // The wide tiles never see the causal mask (the launcher refuses it): their kv_end is seq.
    const int kv_end = BLOCK_N == BLOCK_N_DEFAULT && a.causal ? min(a.seq, w.q0 + BLOCK_M) : a.seq;
    w.tiles = (kv_end + BLOCK_N - 1) / BLOCK_N;
    return w;
}

// PERSISTENT = false: one block per work tile (grid = query_blocks * batch * heads).
// PERSISTENT = true: one CTA per SM (or fewer: the launcher's grid), each looping over its work
// tiles (WorkTile) to hide a block's start-up (the consumers waiting for the first Q and K) and
// its epilogue (the output written from registers while this consumer's tensor-core work is
// over) behind the neighbouring work tiles: the producer loads the next tile's K, Q and V while
// the consumers still finish the current one. Per work tile the consumers run exactly the
// non-persistent algorithm (so the two give the same bits); what carries over from one work
// tile to the next:
//   - the K/V ring: its running count of tiles n (stage n % 2, parity (n / 2) & 1) goes on,
//     never reset, so the ring flows into the next work tile;
//   - Q: one buffer, now with an "empty" barrier too (q_empty above); use j of q_full is work
//     tile j of this CTA;
//   - the consumers' turns: one continuous round robin over the CTA's whole life (see my_turn).
//
// DYNAMIC (persistent only; ATTENTION_PERSISTENT_SCHEDULE=dynamic, attention.h): no fixed list
// of work tiles per CTA; each CTA takes its next work tile when it is about ready for one, from
// a counter in global memory (FlashAttention-3's dynamic scheduler for causal attention, where
// work tiles differ in length and a fixed assignment leaves SMs idle at the end). The protocol:
//   - CTA i's first work tile is tile i (the first round, as static); after it the producer
//     takes tile gridDim.x + atomicAdd(handed_out, 1) (handed_out zeroed before the launch), so
//     every tile is handed out exactly once, in block_order.h's order (heaviest first when
//     causal). It fetches while it loads the current work tile's last V tile, about two tiles
//     of keys before the consumers finish the current work tile: late enough that the CTA is
//     about ready for more, early enough that the atomic's latency hides behind the producer's
//     wait for that V stage (the atomic is issued before the wait, its result stored after).
//   - The producer hands the indices to the consumers through two shared-memory slots,
//     next_work[j % 2] for the CTA's j-th work tile (q_full's use j): slot 0 holds blockIdx.x
//     before the first arrive on q_full; the index fetched during work tile j goes into slot
//     (j + 1) % 2, and the producer's arrive (expect_tx) on q_full for use j + 1 comes after it
//     (the arrive releases the store, the consumers' wait acquires it). Every consumer reads
//     slot j % 2 right after its wait on q_full, the first thing of work tile j, and so before
//     its arrive on q_empty (consume_key_tiles' release_q) of that tile. The store into slot
//     (j + 1) % 2 comes after the producer's wait for q_empty's use j - 1 (in work tile j's
//     load_q, before the last V tile's loads), i.e. after every consumer read that slot for
//     work tile j - 1: no index is overwritten before every consumer has read it.
//   - No more work: the fetched index is >= work_tiles. The producer then waits for q_empty as
//     for a next Q (so that q_full's previous use is over) and arrives on q_full without a copy
//     (a plain arrive completes the phase: q_full counts 1 arrival); the consumers read the
//     index, see it past the last work tile and finish.
//   - The turns: the consumers learn only at the next work tile's q_full whether there is one,
//     so the last consumer hands the turn on after every work tile, its last included (no
//     more_after skip), and once the consumers have seen that there is no more work, consumer
//     0 takes that last hand-over out with one more my_turn(): every use of every named barrier
//     still has 128 threads waiting and 128 arriving, also at the very end.
// Only the source of the indices changes: the index -> (query block, head) mapping
// (work_tile_at) and the per-tile work are the static kernel's, so the bits are the same.
//
// LAST_N: the width of the products of a row's last key tile (BLOCK_N, or 112 or 64 with the
// wide tiles; launch_wide's choice, below). That tile holds seq - (tiles - 1) BLOCK_N keys, and
// products as wide as BLOCK_N compute scores for the keys past seq only to mask them away: at
// s = 2048 the last of twelve 176-key tiles has 112 keys, and 64 of every 2112 keys' products
// (3%) were such waste. A narrower S = Q K^T writes only the first LAST_N / 8 column blocks of
// the score registers; the others (all past seq) are set to -inf before it (issue_last_scores;
// the softmax's mask would set them so too), so their P is 0 and O += P V skips their k-steps.
template <typename T, int D, int CONSUMERS, int BLOCK_N, int LAST_N, bool PERSISTENT, bool DYNAMIC>
__global__ void __launch_bounds__(Shape<CONSUMERS>::THREADS, 1)
    flash_forward_wgmma_kernel(const __grid_constant__ CUtensorMap q_map, const __grid_constant__ CUtensorMap kv_map,
                               const __grid_constant__ FwdArgs a, const BlockOrder order, float scale) {
#if WGMMA_AVAILABLE
    using S = Shape<CONSUMERS>;
    constexpr int BLOCK_M = S::BLOCK_M;
    constexpr int Q_PANEL = BLOCK_M * 128, KV_PANEL = BLOCK_N * 128;  // bytes per 64-column panel
    constexpr int Q_BYTES = tile_bytes<D>(BLOCK_M), KV_BYTES = tile_bytes<D>(BLOCK_N);
    static_assert(BLOCK_N == BLOCK_N_DEFAULT || (BLOCK_N == BLOCK_N_WIDE && D == 128 && CONSUMERS == 2),
                  "176-key tiles at head dim 128 with two consumers only");
    static_assert(Q_PANEL % 1024 == 0 && KV_PANEL % 1024 == 0, "panels start on the swizzle's 1024-byte period");
    static_assert(PERSISTENT || !DYNAMIC, "the dynamic schedule is the persistent kernel's");
    static_assert(LAST_N == BLOCK_N || (BLOCK_N == BLOCK_N_WIDE && (LAST_N == 112 || LAST_N == 64)),
                  "a narrower last tile with the wide tiles only, 112 or 64 keys");
    // The swizzle repeats every 1024 bytes, and the tiles must start on such a boundary.
    extern __shared__ unsigned char smem_raw[];
    __shared__ Barriers bars;
    __shared__ int next_work[2];  // DYNAMIC: slot j % 2, the work tile of q_full's use j (>= work_tiles: none)
    unsigned char *q_tile = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
    unsigned char *k_tiles = q_tile + Q_BYTES;        // two stages
    unsigned char *v_tiles = k_tiles + 2 * KV_BYTES;  // two stages

    const int warpgroup = threadIdx.x / 128, lane = threadIdx.x % 32;
    // This CTA's work tiles: persistent, my_work_tiles of them (persistent_work_tile j = 0, 1,
    // ...). Not persistent, the grid is work_tiles blocks and each warpgroup's work on a tile
    // (the lambdas below) is called once, for `first`, outside any loop: the non-persistent
    // kernel as it was. `first` is computed here, before the warpgroups part, as it always was:
    // computed after setmaxnreg, ptxas spilled 16 bytes at 3 consumers.
    const int work_tiles = order.query_blocks * a.batch * a.heads;
    const int my_work_tiles = persistent_tile_count(blockIdx.x, gridDim.x, work_tiles, order.zigzag);
    auto my_work_tile = [&](int j) { return persistent_work_tile(j, blockIdx.x, gridDim.x, order.zigzag); };
    const WorkTile first = work_tile_at<BLOCK_M, BLOCK_N>(blockIdx.x, order, a);

    if (threadIdx.x == 0) {
        mbarrier_init(&bars.q_full, 1), mbarrier_init(&bars.q_empty, 128 * CONSUMERS);
        for (int s = 0; s < 2; s++) {
            mbarrier_init(&bars.k_full[s], 1), mbarrier_init(&bars.v_full[s], 1);
            mbarrier_init(&bars.k_empty[s], 128 * CONSUMERS), mbarrier_init(&bars.v_empty[s], 128 * CONSUMERS);
        }
        fence_shared_for_wgmma();  // the initialised barriers, for the TMA unit
    }
    __syncthreads();  // the last block-wide barrier: from here on the warpgroups go their own ways

    if (warpgroup == 0) {  // ---- the producer
        warpgroup_release_registers<S::PRODUCER_REGS>();
        if (threadIdx.x != 0) return;
        int n = 0;  // K/V tiles loaded so far: the ring's running count over all work tiles
        // Work tile `work`, the CTA's j-th (a lambda: not persistent, called once, as before).
        auto load_work_tile = [&](const int work, const int j) {
            const WorkTile w = PERSISTENT ? work_tile_at<BLOCK_M, BLOCK_N>(work, order, a) : first;
            // The tensor maps see qkv as [seq][batch][qkv_row]; a box is BLOCK_M (Q) or BLOCK_N
            // (K, V) rows x 64 columns of one batch entry. Column of panel `panel` of part 0/1/2
            // (q/k/v) of head h:
            auto col = [&](int part, int panel) { return w.h * 3 * D + part * D + 64 * panel; };
            // Use j of the Q buffer, once every consumer is done with use j - 1.
            auto load_q = [&]() {
                if (j > 0) mbarrier_wait(&bars.q_empty, (j - 1) & 1);
                mbarrier_arrive_expect_tx(&bars.q_full, Q_BYTES);
                for (int panel = 0; panel < D / 64; panel++)
                    tma_load_3d(q_tile + panel * Q_PANEL, &q_map, col(0, panel), w.b, w.q0, &bars.q_full);
            };
            // The first work tile's Q first, as the non-persistent kernel does; a later one's
            // after its first K, whose stage frees up earlier (after the consumers' last but one
            // S of the tile before, Q's after their last).
            if (j == 0) load_q();
            for (int t = 0; t < w.tiles; t++, n++) {
                const int s = n % 2, use = n / 2;  // stage, and how often it was filled before
                if (use > 0) mbarrier_wait(&bars.k_empty[s], (use - 1) & 1);
                mbarrier_arrive_expect_tx(&bars.k_full[s], KV_BYTES);
                for (int panel = 0; panel < D / 64; panel++)
                    tma_load_3d(k_tiles + s * KV_BYTES + panel * KV_PANEL, &kv_map, col(1, panel), w.b,
                                t * BLOCK_N, &bars.k_full[s]);
                if (PERSISTENT && t == 0 && j > 0) load_q();
                int handed = 0;  // DYNAMIC: the CTA's next work tile, less gridDim.x (see below)
                if (DYNAMIC && t == w.tiles - 1) handed = atomicAdd(order.handed_out, 1);
                if (use > 0) mbarrier_wait(&bars.v_empty[s], (use - 1) & 1);
                mbarrier_arrive_expect_tx(&bars.v_full[s], KV_BYTES);
                for (int panel = 0; panel < D / 64; panel++)
                    tma_load_3d(v_tiles + s * KV_BYTES + panel * KV_PANEL, &kv_map, col(2, panel), w.b,
                                t * BLOCK_N, &bars.v_full[s]);
                // DYNAMIC: the CTA's next work tile, into slot (j + 1) % 2 (after this work
                // tile's load_q, whose wait on q_empty means that every consumer read it for work
                // tile j - 1).
                if (DYNAMIC && t == w.tiles - 1)
                    next_work[(j + 1) % 2] = (int)gridDim.x + handed;
            }
        };
        if constexpr (DYNAMIC) {
            next_work[0] = blockIdx.x;  // read by the consumers after q_full's use 0
            int j = 0;
#pragma unroll 1
            for (int work = blockIdx.x; work < work_tiles;) {
                load_work_tile(work, j);
                j++;
                work = next_work[j % 2];  // stored by load_work_tile (this thread)
            }
            // No more work: slot j says so; q_full's use j, without a copy, once its use j - 1 is
            // over (a plain arrive completes it; j >= 1, since the grid is at most work_tiles CTAs).
            mbarrier_wait(&bars.q_empty, (j - 1) & 1);
            mbarrier_arrive(&bars.q_full);
        } else if constexpr (PERSISTENT) {
#pragma unroll 1
            for (int j = 0; j < my_work_tiles; j++) load_work_tile(my_work_tile(j), j);
        } else {
            load_work_tile(blockIdx.x, 0);
        }
        return;
    }

    // ---- the consumers
    warpgroup_claim_registers<S::CONSUMER_REGS>();
    const int consumer = warpgroup - 1, warp = threadIdx.x / 32 - 4;  // warp 0 .. 4 CONSUMERS - 1 of the consumers
    const float scale_log2 = scale * LOG2E;
    // The persistent kernel at 3 consumers never drops: the dropout code, inside the loop over
    // work tiles, made ptxas spill (160 registers per consumer thread); launch_forward runs the
    // non-persistent kernel for that case instead.
    // Nor do the wide tiles (BLOCK_N = 176): the masks are drawn per 64 keys, and 176 is no
    // multiple of 64; the launcher refuses them a dropping (or causal) problem, and the dropout
    // and causal code is compiled out of them (MAY_DROP, MAY_BE_CAUSAL).
    constexpr bool MAY_DROP = !(PERSISTENT && CONSUMERS == 3) && BLOCK_N % 64 == 0;
    constexpr bool MAY_BE_CAUSAL = BLOCK_N == BLOCK_N_DEFAULT;
    const bool dropping = MAY_DROP && a.p_drop > 0.0f;
    const uint32_t drop_threshold = dropout_threshold(a.p_drop);
    const int g = lane / 4, seq = a.seq;
    const uint32_t q_addr = smem_addr(q_tile) + consumer * 64 * 128;  // the consumer's rows, in each panel

    // Turns, round robin 0, 1, .., CONSUMERS - 1, 0, ..: consumer c issues its products only
    // in its turn (named barrier TURNS + c) and then hands the turn to c + 1 (mod CONSUMERS).
    // Every consumer of the block has the same number of turns (tiles + 1 per work tile, and
    // every consumer works on every work tile of the CTA). The round robin is one token passed
    // on: the last consumer puts it in, handing consumer 0 its first turn before any, and
    // takes it out by skipping the hand-over after its own very last turn (of the CTA's last
    // work tile; after the last turn of an earlier work tile it hands over as after any other,
    // so that consumer 0 goes on with the next work tile). So every use of every barrier has
    // 128 threads waiting (its consumer) and 128 arriving (the one before it), and a hand-over
    // for a barrier's next use can only come after the turn of its current use: the turns run
    // strictly one after another, from one work tile into the next.
    auto my_turn = [&]() { named_barrier_sync(TURNS + consumer, 256); };
    auto your_turn = [&]() { named_barrier_arrive(TURNS + (consumer + 1) % CONSUMERS, 256); };
    const bool last_consumer = consumer == CONSUMERS - 1;
    if (last_consumer) your_turn();

    // Work tile `work`, the CTA's j-th; its K/V tiles are tiles kv, kv + 1, ... of the rings
    // (their running count, as the producer's n); more_after: the CTA has work tiles after it.
    // A lambda, so that the non-persistent kernel calls it once, outside any loop, exactly as
    // before the persistent one existed.
    auto consume_work_tile = [&](const int work, const int j, const int kv, const bool more_after) {
        const WorkTile w = PERSISTENT ? work_tile_at<BLOCK_M, BLOCK_N>(work, order, a) : first;
        const int b = w.b, h = w.h, bh = w.bh, q0 = w.q0, tiles = w.tiles;

        // This thread's rows (g and g + 8 of its warp's 16; consumer c has rows [64 c, 64 c +
        // 64)), their running max (log2 domain) and sum, and its part of their output: afresh
        // for every work tile.
        const int row_i[2] = {q0 + 16 * warp + g, q0 + 16 * warp + g + 8};
        const uint64_t drop_bh = a.drop.global_bh(b, h);
        const uint64_t row_group[2] = {dropout_row_group(drop_bh, row_i[0], seq),
                                       dropout_row_group(drop_bh, row_i[1], seq)};
        float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
        float o[D / 8][4];
#pragma unroll
        for (int n = 0; n < D / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
        float s[BLOCK_N / 8][4];
        uint32_t p[BLOCK_N / 16][4];  // the probabilities as A operands, 16 keys each

        // Key tile t of this work tile is tile kv + t of the rings: its stage and its parity.
        auto stage = [&](int t) { return (kv + t) % 2; };
        auto parity = [&](int t) { return ((kv + t) / 2) & 1; };
        // S = Q K_t^T, 64 x KEYS per consumer (KEYS: a std::integral_constant, BLOCK_N or the last
        // tile's LAST_N), in d / 16 steps of 16 columns of Q and K: step kk reads 32 bytes into
        // panel kk / 4 (the hardware applies the swizzle to the address). Narrower than BLOCK_N,
        // it writes the first KEYS / 8 column blocks of s.
        auto scores_product = [&](int t, auto keys) {
            constexpr int KEYS = decltype(keys)::value;
            const uint32_t k_addr = smem_addr(k_tiles + stage(t) * KV_BYTES);
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++) {
                const uint32_t col = (kk % 4) * 32;
                wgmma_ss<T, KEYS>(leading_column_blocks<KEYS / 8>(s),
                                  wgmma_descriptor(q_addr + (kk / 4) * Q_PANEL + col, 0, 1024),
                                  wgmma_descriptor(k_addr + (kk / 4) * KV_PANEL + col, 0, 1024), kk > 0);
            }
            wgmma_commit();
        };
        // O += P V_t over KEYS keys: V's rows are keys, the reduction dimension, so it is read
        // "MN-major": step kk starts 16 rows (2048 bytes) further, and the panels of 64 columns
        // are KV_PANEL apart.
        auto output_product = [&](int t, auto keys) {
            constexpr int KEYS = decltype(keys)::value;
            const uint32_t v_addr = smem_addr(v_tiles + stage(t) * KV_BYTES);
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < KEYS / 16; kk++)
                wgmma_rs_mn<T, D>(o, p[kk], wgmma_descriptor(v_addr + kk * 16 * 128, KV_PANEL, 1024));
            wgmma_commit();
        };
        using AllKeys = std::integral_constant<int, BLOCK_N>;
        using LastKeys = std::integral_constant<int, LAST_N>;
        auto issue_scores = [&](int t) { scores_product(t, AllKeys{}); };
        auto issue_output = [&](int t) { output_product(t, AllKeys{}); };
        // The last tile's two products, LAST_N keys wide (LAST_N < BLOCK_N only; the kernel's
        // comment says why). S's column blocks past LAST_N hold keys past seq: set to -inf here
        // (the mask would anyway), so that their old values are dead (left to hold the last
        // tile's values, they stayed live and the persistent kernels spilled up to 416 bytes).
        auto issue_last_scores = [&](int t) {
#pragma unroll
            for (int n = LAST_N / 8; n < BLOCK_N / 8; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = -INFINITY;
            scores_product(t, LastKeys{});
        };
        auto issue_last_output = [&](int t) { output_product(t, LastKeys{}); };
        // The dropout masks of tile t's two blocks of 64 keys. With two consumers they are drawn
        // during the softmax, while the tensor cores still work on the previous P V, and live
        // across that wait (16 registers); three consumers have 160 registers each, too few for
        // that (ptxas spills), and draw each block's mask right before applying it (8 registers
        // at a time) - the other consumers' products keep the tensor cores busy meanwhile.
        constexpr bool DRAW_DURING_SOFTMAX = CONSUMERS == 2;
        TileDropout drop[DRAW_DURING_SOFTMAX && MAY_DROP ? BLOCK_N / 64 : 1];
        auto draw_dropout = [&](int t, int part) {
            return tile_dropout(row_group, t * (BLOCK_N / 64) + part, a.keys, a.offset, drop_threshold);
        };
        // P from the scores of tile t: register pairs of the score layout are the A operand's (as
        // mma.sync's), then dropped by ANDing them with the masks.
        // The wide tiles (never dropping) pack their BLOCK_N / 16 fragments in one plain loop.
        auto pack_probabilities = [&](int t) {
            if constexpr (BLOCK_N % 64 != 0) {  // the wide tiles: never dropping
#pragma unroll
                for (int kk = 0; kk < BLOCK_N / 16; kk++) {
                    p[kk][0] = pack2<T>(s[2 * kk][0], s[2 * kk][1]);
                    p[kk][1] = pack2<T>(s[2 * kk][2], s[2 * kk][3]);
                    p[kk][2] = pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
                    p[kk][3] = pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
                }
                (void)t;
            } else {
#pragma unroll
                for (int part = 0; part < BLOCK_N / 64; part++) {
                    TileDropout late;
                    if (!DRAW_DURING_SOFTMAX && dropping) late = draw_dropout(t, part);
#pragma unroll
                    for (int kk = part * 4; kk < part * 4 + 4; kk++) {
                        p[kk][0] = pack2<T>(s[2 * kk][0], s[2 * kk][1]);
                        p[kk][1] = pack2<T>(s[2 * kk][2], s[2 * kk][3]);
                        p[kk][2] = pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
                        p[kk][3] = pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
                        if (dropping) drop_a_fragment(p[kk], DRAW_DURING_SOFTMAX ? drop[part] : late, kk % 4);
                    }
                }
            }
        };
        auto softmax = [&](int t, float (&alpha)[2]) {
            online_softmax_step(s, m, l, alpha, row_i, t * BLOCK_N, seq, MAY_BE_CAUSAL ? a.causal : 0, scale_log2);
            if constexpr (DRAW_DURING_SOFTMAX && MAY_DROP) {
                if (dropping) {
#pragma unroll
                    for (int part = 0; part < BLOCK_N / 64; part++) drop[part] = draw_dropout(t, part);
                }
            }
        };

        // Q first. (DYNAMIC: the loop below waited for it, to read `work`.)
        if constexpr (!DYNAMIC) mbarrier_wait(&bars.q_full, j & 1);
        // The pipeline over the key tiles (flash_forward_common.cuh), with 16-bit products, the
        // masked softmax, dropout and P packed as pairs. (DYNAMIC: more_after always true, above.)
        if constexpr (LAST_N == BLOCK_N)
            consume_key_tiles<PERSISTENT>(bars, tiles, stage, parity, my_turn, your_turn, last_consumer, more_after,
                                          issue_scores, issue_output, issue_scores, issue_output, softmax,
                                          pack_probabilities, s, o, p);
        else
            consume_key_tiles<PERSISTENT>(bars, tiles, stage, parity, my_turn, your_turn, last_consumer, more_after,
                                          issue_scores, issue_output, issue_last_scores, issue_last_output, softmax,
                                          pack_probabilities, s, o, p);

        const int64_t token_stride = (int64_t)a.batch * a.ctx_row;
        const int64_t head_offset = (int64_t)b * a.ctx_row + (int64_t)h * D;
        write_output_rows<T>(static_cast<T *>(a.ctx), a.lse + (int64_t)bh * seq, o, m, l, row_i, seq, token_stride,
                             head_offset, dropout_keep_scale(a.p_drop));
        return tiles;
    };
    if constexpr (DYNAMIC) {
#pragma unroll 1
        for (int j = 0, kv = 0;; j++) {
            mbarrier_wait(&bars.q_full, j & 1);
            const int work = next_work[j % 2];  // read before this consumer releases Q (q_empty) in work tile j
            if (work >= work_tiles) break;
            kv += consume_work_tile(work, j, kv, true);
        }
        if (consumer == 0) my_turn();  // the last consumer's last hand-over (see DYNAMIC above)
    } else if constexpr (PERSISTENT) {
#pragma unroll 1
        for (int j = 0, kv = 0; j < my_work_tiles; j++)
            kv += consume_work_tile(my_work_tile(j), j, kv, j + 1 < my_work_tiles);
    } else {
        consume_work_tile(blockIdx.x, 0, 0, false);
    }
#else
    (void)q_map, (void)kv_map, (void)a, (void)order, (void)scale;
    __trap();
#endif
}

// Whether this image holds the kernels above: the same test as theirs (WGMMA_AVAILABLE), in
// the same translation unit, so compiled for the same targets and loaded from the same
// image as they are. A build without sm_90a code runs on a Hopper GPU through the PTX of an
// older target, JIT-compiled, in which the kernels above are traps.
__device__ int wgmma_image_flag;
__global__ void wgmma_image_probe_kernel() { wgmma_image_flag = WGMMA_AVAILABLE; }

// Q (64 rows per consumer), two K and two V stages of block_n keys (the swizzled 16-bit tiles
// of tile_bytes), and room to align them to 1024 bytes. At d 128, two consumers: 32 KiB + 128
// KiB + 1 KiB = 161 KiB with 128-key tiles, 32 + 176 + 1 = 209 KiB with 176-key ones.
constexpr size_t forward_smem_bytes(int head_dim, int consumers, int block_n) {
    return (size_t)64 * consumers * head_dim * 2 + 4 * (size_t)block_n * head_dim * 2 + 1024;
}

// The dynamic schedule's counter (BlockOrder::handed_out), one int per GPU: allocated at the
// first dynamic launch on that GPU and kept for the process's life (never freed: 4 bytes, a
// deliberate static buffer, not a leak that grows), zeroed on the launch's stream (the default
// stream, as every launch in this file) right before each launch, so that launches one after
// another on that stream each count from zero.
int *zeroed_handed_out_counter() {
    constexpr int MAX_DEVICES = 64;
    static int *counters[MAX_DEVICES] = {};
    int device = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    if (device < 0 || device >= MAX_DEVICES)
        DIE("flash attention: GPU %d is beyond the %d the dynamic schedule's counters cover", device, MAX_DEVICES);
    if (!counters[device]) CUDA_CHECK(cudaMalloc(&counters[device], sizeof(int)));
    CUDA_CHECK(cudaMemsetAsync(counters[device], 0, sizeof(int), 0));
    return counters[device];
}

template <typename T, int D, int CONSUMERS, int BLOCK_N, int LAST_N, bool PERSISTENT, bool DYNAMIC>
void launch_kernel(const FwdArgs &a, AttentionCausalOrder causal_order, int persistent_ctas) {
    using S = Shape<CONSUMERS>;
    constexpr size_t smem = forward_smem_bytes(D, CONSUMERS, BLOCK_N);
    static_assert(smem == (size_t)tile_bytes<D>(S::BLOCK_M) + 4 * tile_bytes<D>(BLOCK_N) + 1024,
                  "the kernel's carve-up");
    // The wide tiles' kernel has no dropout and no causal mask compiled in (the kernel's MAY_DROP,
    // MAY_BE_CAUSAL): the dispatch never sends it such a problem; should it, stop.
    if (BLOCK_N != BLOCK_N_DEFAULT && (a.causal || a.p_drop > 0.0f))
        DIE("flash attention: the wgmma forward with %d-key tiles takes neither the causal mask nor dropout", BLOCK_N);
    allow_dynamic_smem<flash_forward_wgmma_kernel<T, D, CONSUMERS, BLOCK_N, LAST_N, PERSISTENT, DYNAMIC>>(smem);
    const int bh_count = a.batch * a.heads, query_blocks = ceil_div(a.seq, S::BLOCK_M);
    if ((int64_t)query_blocks * bh_count > INT32_MAX)
        DIE("flash attention: %d query blocks x %d heads is more blocks than one launch takes", query_blocks,
            bh_count);
    // Natural, and the persistent CTAs' rounds straight: without the mask, every block costs the
    // same. When causal, the static persistent CTAs' rounds zig-zag (block_order.h).
    BlockOrder order = {query_blocks, 0, PERSISTENT && !DYNAMIC && a.causal, nullptr};
    if (a.causal && causal_order == ATTENTION_CAUSAL_HEAVY_FIRST)
        order.group_heads = flash_heavy_first_group_heads(a.seq, D, bh_count);  // block_order.h
    else if (a.causal && causal_order == ATTENTION_CAUSAL_HEAVY_FIRST_PER_HEAD)
        order.group_heads = 1;
    // The TMA sees qkv as [seq][batch][qkv_row] and copies boxes of 64 columns: BLOCK_M rows
    // of Q, BLOCK_N of K and V.
    const CUtensorMap q_map = tensor_map_rows<T>(a.qkv, a.qkv_row, a.batch, a.seq, S::BLOCK_M);
    const CUtensorMap kv_map = tensor_map_rows<T>(a.qkv, a.qkv_row, a.batch, a.seq, BLOCK_N);
    const int work_tiles = query_blocks * bh_count;
    const int grid = PERSISTENT ? flash_persistent_grid(work_tiles, persistent_ctas) : work_tiles;
    if (DYNAMIC) order.handed_out = zeroed_handed_out_counter();
    flash_forward_wgmma_kernel<T, D, CONSUMERS, BLOCK_N, LAST_N, PERSISTENT, DYNAMIC>
        <<<grid, S::THREADS, smem>>>(q_map, kv_map, a, order, 1.0f / sqrtf((float)D));
    CHECK_LAUNCH();
}

}  // namespace

int flash_wgmma_image_loaded(void) {
    static int loaded = -1;
    if (loaded < 0) {
        wgmma_image_probe_kernel<<<1, 1>>>();
        const cudaError_t err = cudaGetLastError();
        if (err == cudaErrorNoKernelImageForDevice) {
            const int cc = gpu_compute_capability();
            fail_user("this build holds no code that this GPU (compute capability %d.%d) can run: build for it "
                      "(--define=CUDA_ARCHS=...)",
                      cc / 10, cc % 10);
        }
        CUDA_CHECK(err);
        CUDA_CHECK(cudaMemcpyFromSymbol(&loaded, wgmma_image_flag, sizeof loaded));
    }
    return loaded;
}

size_t flash_forward_wgmma_smem_bytes(int head_dim, int consumers, int block_n) {
    return forward_smem_bytes(head_dim, consumers, block_n);
}

int flash_forward_wgmma_has_persistent(int consumers, int dropping) { return !(consumers == 3 && dropping); }

// Persistent (persistent_ctas > 0) or not; persistent only where the kernel has that variant
// (flash_forward_wgmma_has_persistent: not at 3 consumers when dropping, see MAY_DROP in the
// kernel), else the non-persistent kernel; persistent with the static or the dynamic schedule.
template <typename T, int D, int CONSUMERS, int BLOCK_N, int LAST_N = BLOCK_N>
void launch_forward(const FwdArgs &a, AttentionCausalOrder causal_order, int persistent_ctas, bool dynamic) {
    if (persistent_ctas > 0 && flash_forward_wgmma_has_persistent(CONSUMERS, a.p_drop > 0.0f)) {
        if (dynamic)  // full-width last tiles: narrower ones made ptxas serialise this kernel's wgmmas (C7511)
            launch_kernel<T, D, CONSUMERS, BLOCK_N, BLOCK_N, true, true>(a, causal_order, persistent_ctas);
        else
            launch_kernel<T, D, CONSUMERS, BLOCK_N, LAST_N, true, false>(a, causal_order, persistent_ctas);
    } else {
        launch_kernel<T, D, CONSUMERS, BLOCK_N, LAST_N, false, false>(a, causal_order, 0);
    }
}

// The wide tiles at d 128, with the last tile of a row as narrow as the keys it holds allow
// (the kernel's LAST_N): 64 keys or fewer left, a 64-key product; 65-112 (s = 2048: 112), 112;
// else 176. Three widths, not one per multiple of 16, to keep the kernels compiled few.
static int flash_forward_wide_last_n(int seq) {
    const int left = seq - (ceil_div(seq, BLOCK_N_WIDE) - 1) * BLOCK_N_WIDE;  // 1 .. 176
    return left <= 64 ? 64 : left <= 112 ? 112 : BLOCK_N_WIDE;
}

template <typename T>
void launch_wide(const FwdArgs &a, AttentionCausalOrder causal_order, int persistent_ctas, bool dynamic) {
    switch (flash_forward_wide_last_n(a.seq)) {
    case 64: return launch_forward<T, 128, 2, BLOCK_N_WIDE, 64>(a, causal_order, persistent_ctas, dynamic);
    case 112: return launch_forward<T, 128, 2, BLOCK_N_WIDE, 112>(a, causal_order, persistent_ctas, dynamic);
    default: return launch_forward<T, 128, 2, BLOCK_N_WIDE>(a, causal_order, persistent_ctas, dynamic);
    }
}

template <typename T, int D>
void flash_forward_wgmma(const FwdArgs &a, int consumers, int block_n, AttentionCausalOrder causal_order,
                         int persistent_ctas, int dynamic_schedule) {
    if (block_n != BLOCK_N_DEFAULT && (block_n != BLOCK_N_WIDE || D != 128 || consumers != 2))
        DIE("flash attention: the wgmma forward has no %d-key tiles at head dim %d with %d consumers (176: d 128, 2 "
            "consumers only)",
            block_n, D, consumers);
    if constexpr (D == 64) {
        if (consumers == 3)
            return launch_forward<T, D, 3, BLOCK_N_DEFAULT>(a, causal_order, persistent_ctas, dynamic_schedule != 0);
    }
    if (consumers != 2) DIE("flash attention: the wgmma forward at head dim %d has no %d-consumer kernel", D, consumers);
    if constexpr (D == 128) {
        if (block_n == BLOCK_N_WIDE) return launch_wide<T>(a, causal_order, persistent_ctas, dynamic_schedule != 0);
    }
    launch_forward<T, D, 2, BLOCK_N_DEFAULT>(a, causal_order, persistent_ctas, dynamic_schedule != 0);
}

template void flash_forward_wgmma<__half, 64>(const FwdArgs &, int, int, AttentionCausalOrder, int, int);
template void flash_forward_wgmma<__half, 128>(const FwdArgs &, int, int, AttentionCausalOrder, int, int);
template void flash_forward_wgmma<__nv_bfloat16, 64>(const FwdArgs &, int, int, AttentionCausalOrder, int, int);
template void flash_forward_wgmma<__nv_bfloat16, 128>(const FwdArgs &, int, int, AttentionCausalOrder, int, int);
