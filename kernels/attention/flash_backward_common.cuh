// What the four Hopper attention backwards share - flash_backward_wgmma.cu (two warpgroups,
// queries as the wgmma's M), flash_backward_ws.cu (the same math, warp-specialised),
// flash_backward_swapab.cu (scores computed transposed) and flash_backward_ws_swapab.cu (both:
// 80-query tiles) - written once: the start of a block (K and V copied in, dK and dV zeroed), the
// two warp-specialised kernels' walk over their blocks (key_block_work) and their producer's two
// loops (produce_key_and_query_tiles, its copies of a query tile load_query_tile; reduce_dq_tiles),
// the per-thread steps
// of a query tile that the two queries-as-M kernels do alike (dropout draw, P and dS into their
// swizzled panels), dQ staged for the TMA unit (stage_dq_rows: the wgmma and swapAB kernels; the
// warp-specialised ones stage dQ their own ways, in fewer registers), and the dropout mask drawn
// transposed for the two swapAB kernels (draw_mask_bits, draw_mask_bits_by_word, KeyMaskBits).
//
// Thread layout throughout (wgmma.cuh's accumulator fragments): warp wq of a warpgroup,
// g = lane / 4, c = lane % 4; a thread holds rows 16 wq + g and 16 wq + g + 8 (r = 0, 1) of a
// 64-row accumulator, columns 8 n + 2 c and 8 n + 2 c + 1 of column block n.
//
// All forceinline, so that each kernel compiles to the code it would have with these written
// out in it. Not here: the edge / causal mask of the scores, which flash_backward_ws.cu writes
// as one bound per row (its register budget) and flash_backward_wgmma.cu as three tests per
// score - two forms, each the better one for its kernel.
#ifndef KERNELS_ATTENTION_FLASH_BACKWARD_COMMON_CUH
#define KERNELS_ATTENTION_FLASH_BACKWARD_COMMON_CUH

#include <math.h>
#include <stdint.h>

#include "kernels/attention/block_order.h"
#include "kernels/attention/flash_common.cuh"
#include "kernels/attention/flash_kernels.cuh"
#include "kernels/attention/hopper_pipeline.cuh"
#include "kernels/attention/wgmma.cuh"

// K and V of a block's keys [k0, k0 + 128) of head h (batch b) into k_tile and v_tile, by one
// thread: D / 64 TMA copies each of a 64-column panel (128 keys x 128 bytes, 128-byte swizzle,
// kv_panel bytes apart), all counted on the mbarrier kv_full. kv_map is the fused qkv tensor's
// map: head h's k at column h * 3D + D, its v at h * 3D + 2D.
template <int D>
__device__ __forceinline__ void load_key_value_tiles(unsigned char *k_tile, unsigned char *v_tile,
                                                     const CUtensorMap *kv_map, uint64_t *kv_full, int h, int b,
                                                     int k0, int kv_panel) {
    mbarrier_arrive_expect_tx(kv_full, 2 * (D / 64 * kv_panel));
    for (int panel = 0; panel < D / 64; panel++) {
        tma_load_3d(k_tile + panel * kv_panel, kv_map, h * 3 * D + D + 64 * panel, b, k0, kv_full);
        tma_load_3d(v_tile + panel * kv_panel, kv_map, h * 3 * D + 2 * D + 64 * panel, b, k0, kv_full);
    }
}

// One query tile's copies into a stage of a warp-specialised backward's ring (flash_backward_ws.cu,
// flash_backward_ws_swapab.cu), by the producer's one thread: Q's and dO's D / 64 panels of 64
// columns (qo_panel bytes apart) of the BLOCK_M queries from `row` (TMA; rows past seq read as
// zeros), then the tile's lse log2(e) and Dsum from head bh's rows of the prepare pass's tile
// statistics (two 1-D bulk copies of BLOCK_M floats; the rows are padded with zeros so that a
// tile never leaves its row, flash_tile_stats_row; Dsum's rows follow all bh_count heads' lse
// rows), all counted on the stage's mbarrier `full`. Head h of batch b: its q at column h * 3D
// of qkv (q_map), its dO at h * D of dctx (do_map).
template <int D, int BLOCK_M>
__device__ __forceinline__ void load_query_tile(unsigned char *q_stage, unsigned char *do_stage, float *stage_stats,
                                                const CUtensorMap *q_map, const CUtensorMap *do_map, uint64_t *full,
                                                int h, int b, int row, int qo_panel, const float *tile_stats, int bh,
                                                int bh_count, int seq) {
    mbarrier_arrive_expect_tx(full, 2 * (D / 64) * qo_panel + 2 * BLOCK_M * 4);
    for (int panel = 0; panel < D / 64; panel++) {
        tma_load_3d(q_stage + panel * qo_panel, q_map, h * 3 * D + 64 * panel, b, row, full);
        tma_load_3d(do_stage + panel * qo_panel, do_map, h * D + 64 * panel, b, row, full);
    }
    const int64_t stats_row = flash_tile_stats_row(seq);
    const float *lse_log2 = tile_stats + bh * stats_row + row;
    bulk_load_1d(stage_stats, lse_log2, BLOCK_M * 4, full);
    bulk_load_1d(stage_stats + BLOCK_M, lse_log2 + bh_count * stats_row, BLOCK_M * 4, full);
}

// The warp-specialised backwards' blocks (flash_backward_ws.cu, flash_backward_ws_swapab.cu):
// the block at linear index idx (flash_key_block_at's order) holds keys [k0, k0 + BLOCK_N) of
// head bh; its query tiles of BLOCK_M queries start at m_start (causal: the tile holding query
// k0, the first that any of its keys sees; else 0), `steps` of them up to seq.
struct KeyBlockWork {
    int k0, bh, m_start, steps;
};
// The launch's heads (batch x heads), tokens and blocks (key blocks x heads), as the kernel
// computed them for its consumers.
struct BlockCount {
    int bh_count, seq, total_blocks;
};
template <int BLOCK_N, int BLOCK_M>
__device__ __forceinline__ KeyBlockWork key_block_work(int idx, const KeyBlockOrder &order, int bh_count, int seq,
                                                       bool causal) {
    const FlashBlock blk = flash_key_block_at(idx, order.key_blocks, bh_count, order.group_heads);
    KeyBlockWork w;
    w.k0 = blk.query_block * BLOCK_N, w.bh = blk.bh;
    // (k0 itself where tiles of BLOCK_M divide BLOCK_N: no division in the code.)
    w.m_start = !causal ? 0 : BLOCK_N % BLOCK_M == 0 ? w.k0 : w.k0 / BLOCK_M * BLOCK_M;
    w.steps = (seq - w.m_start + BLOCK_M - 1) / BLOCK_M;
    return w;
}

// A warp-specialised backward's producer, its first warp (one thread), over the CTA's blocks
// (one, or PERSISTENT every gridDim.x-th from blockIdx.x): a block's K and V (load_key_value_tiles,
// on kv_full; a later block's once the consumers have released the one before's on kv_empty,
// after the block's first query tile so that it overlaps their last), then each of its query
// tiles (load_query_tile) into a two-stage ring of Q, dO (D / 64 panels of qo_panel bytes a
// stage) and statistics (2 BLOCK_M floats a stage), stage s once the consumers have released it
// (qdo_empty[s]) and counted on qdo_full[s].
template <int D, int BLOCK_N, int BLOCK_M, bool PERSISTENT>
__device__ __forceinline__ void produce_key_and_query_tiles(
    const BwdArgs &a, const KeyBlockOrder &order, const BlockCount &count, bool causal, unsigned char *k_tile,
    unsigned char *v_tile, int kv_panel, unsigned char *q_tiles, unsigned char *do_tiles, int qo_panel, float *stats,
    const CUtensorMap *q_map, const CUtensorMap *kv_map, const CUtensorMap *do_map, uint64_t *kv_full,
    uint64_t *kv_empty, uint64_t *qdo_full, uint64_t *qdo_empty) {
    constexpr int STATS_FLOATS = 2 * BLOCK_M;
    const int qo_bytes = D / 64 * qo_panel;
    const int bh_count = count.bh_count, seq = count.seq, total_blocks = count.total_blocks;
    int tile = 0;  // the CTA's query tiles so far: the ring's count
#pragma unroll 1
    for (int idx = blockIdx.x, j = 0; idx < total_blocks;) {  // j: the CTA's blocks so far
        const KeyBlockWork w = key_block_work<BLOCK_N, BLOCK_M>(idx, order, bh_count, seq, causal);
        const int b = w.bh / a.heads, h = w.bh % a.heads;
        if (j == 0) load_key_value_tiles<D>(k_tile, v_tile, kv_map, kv_full, h, b, w.k0, kv_panel);
        // The block's query tiles from m_start while they start before seq (w.steps of them; the
        // loop counts rows: one register fewer at a producer's 24).
#pragma unroll 1
        for (int row = w.m_start; row < seq; row += BLOCK_M, tile++) {
            const int stage = tile % 2;
            if (tile >= 2) mbarrier_wait(&qdo_empty[stage], (tile / 2 - 1) & 1);
            load_query_tile<D, BLOCK_M>(q_tiles + stage * qo_bytes, do_tiles + stage * qo_bytes,
                                        stats + stage * STATS_FLOATS, q_map, do_map, &qdo_full[stage], h, b, row,
                                        qo_panel, a.tile_stats, w.bh, bh_count, seq);
            if (row == w.m_start && j > 0) {  // PERSISTENT: a later block's K and V
                mbarrier_wait(kv_empty, (j - 1) & 1);
                load_key_value_tiles<D>(k_tile, v_tile, kv_map, kv_full, h, b, w.k0, kv_panel);
            }
        }
        if constexpr (!PERSISTENT) break;  // one block: the compiler sees no loop
        idx += gridDim.x, j++;
    }
}

// A warp-specialised backward's mbarriers (its producer warpgroup, two consumer warpgroups of 128
// threads): K and V landed (kv_full) and, PERSISTENT, released by both consumers (kv_empty); a
// stage's Q, dO and statistics landed / released (qdo_full[s], qdo_empty[s]); consumer cw's dQ
// buffer b staged by its 128 threads / read by the TMA unit (dq_full[cw][b], dq_empty[cw][b]):
// DQ_BUFFERS per consumer, 2 for the 64-query kernel, 1 for the 80-query one.
template <int DQ_BUFFERS>
struct WsBackwardBarriers {
    uint64_t kv_full, qdo_full[2], qdo_empty[2], dq_full[2][DQ_BUFFERS], dq_empty[2][DQ_BUFFERS];
    uint64_t kv_empty;

    // By one thread, before the block's one __syncthreads (fenced for the TMA unit).
    __device__ __forceinline__ void init() {
        mbarrier_init(&kv_full, 1);
        mbarrier_init(&kv_empty, 256);
        for (int s = 0; s < 2; s++) mbarrier_init(&qdo_full[s], 1), mbarrier_init(&qdo_empty[s], 256);
        for (int cw = 0; cw < 2; cw++)
            for (int b = 0; b < DQ_BUFFERS; b++)
                mbarrier_init(&dq_full[cw][b], 128), mbarrier_init(&dq_empty[cw][b], 1);
        fence_shared_for_wgmma();
    }
};

// A warp-specialised backward's producer, warp 1 + cw (one thread): consumer cw's dQ columns
// [64 cw, 64 cw + 64) of each query tile, staged by the consumer as two panels (2 cw, 2 cw + 1,
// panel_bytes apart) of 32 float columns in buffer tile % BUFFERS (buffer_bytes apart), added
// into the float accumulator by two TMA reduce-adds (rows past seq clipped by the TMA unit):
// once the consumer has staged it (dq_full[buffer]); handed back once the TMA unit has read it
// (dq_empty[buffer]).
template <int BLOCK_N, int BLOCK_M, int BUFFERS, bool PERSISTENT>
__device__ __forceinline__ void reduce_dq_tiles(const KeyBlockOrder &order, const BlockCount &count, bool causal,
                                                int cw, const unsigned char *dq_buffers, int buffer_bytes,
                                                int panel_bytes, const CUtensorMap *dq_map, uint64_t *dq_full,
                                                uint64_t *dq_empty) {
    const int bh_count = count.bh_count, seq = count.seq, total_blocks = count.total_blocks;
    int tile = 0;
#pragma unroll 1
    for (int idx = blockIdx.x; idx < total_blocks; idx += gridDim.x) {
        const KeyBlockWork w = key_block_work<BLOCK_N, BLOCK_M>(idx, order, bh_count, seq, causal);
#pragma unroll 1
        for (int step = 0; step < w.steps; step++, tile++) {
            const int buffer = tile % BUFFERS, q0 = w.m_start + step * BLOCK_M;
            mbarrier_wait(&dq_full[buffer], (tile / BUFFERS) & 1);
            for (int half = 0; half < 2; half++) {
                const int panel = 2 * cw + half;
                const unsigned char *staged = dq_buffers + buffer * buffer_bytes + panel * panel_bytes;
                tma_reduce_add_3d(dq_map, 32 * panel, q0, w.bh, reinterpret_cast<const float *>(staged));
            }
            bulk_wait_read();  // the TMA unit has read the buffer: the consumer may refill it
            mbarrier_arrive(&dq_empty[buffer]);
        }
        if constexpr (!PERSISTENT) break;
    }
    bulk_wait_all();  // before the block's shared memory goes away
}

// dK and dV, the accumulators a block keeps over all its query tiles (NB column blocks of
// 8 floats, 4 per thread each), set to zero.
template <int NB>
__device__ __forceinline__ void zero_key_accumulators(float (&dk)[NB][4], float (&dv)[NB][4]) {
#pragma unroll
    for (int n = 0; n < NB; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) dk[n][e] = dv[n][e] = 0.0f;
}

// The dropout mask of this thread's two query rows, i_first and i_first + 8, in the 64-key
// block key_block (keys 8 n + 2 c + e of it): TileDropout, flash_common.cuh, drawn for head
// global_bh (HeadRange::global_bh).
__device__ __forceinline__ TileDropout query_rows_dropout(uint64_t global_bh, int i_first, int seq, int key_block,
                                                          const PhiloxKeys &keys, uint64_t offset,
                                                          uint32_t threshold) {
    const uint64_t row_group[2] = {dropout_row_group(global_bh, i_first, seq),
                                   dropout_row_group(global_bh, i_first + 8, seq)};
    return tile_dropout(row_group, key_block, keys, offset, threshold);
}

// P = exp(S scale - lse) of one warpgroup's 64 queries x 64 keys, kept in s (as floats, for
// dS), and Pd = P * dropout mask, stored as 16-bit pairs into the warpgroup's panel of the
// P tile: p_panel, [query][key], 128 bytes a row, 128-byte swizzle. s: wgmma's accumulator
// of the scores (rows = queries), masked scores already -inf. row0 = 16 wq + g, this thread's
// first row in the panel; row_lse_log2(r, il) is lse log2(e) of its row r (= 0, 1), row il =
// row0 + 8 r of the tile: a kernel that keeps the statistics in registers picks by r, one that
// reads them from the tile's shared memory indexes by il (the index computed once, here, and
// passed in: the ws kernel keeps its register budget that way). The lse is asked for
// row by row where it is used, so that a load from shared memory stays after the stores before
// it. The factor 1 / (1 - p) of the kept probabilities is left to dV's end.
template <typename T, typename RowLseLog2>
__device__ __forceinline__ void store_probabilities(float (&s)[8][4], RowLseLog2 row_lse_log2, float scale_log2,
                                                    bool dropping, const TileDropout &dropped,
                                                    unsigned char *p_panel, int row0, int c) {
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int il = row0 + 8 * r;
        const float lse_log2 = row_lse_log2(r, il);
#pragma unroll
        for (int n = 0; n < 8; n++) {
#pragma unroll
            for (int e = 0; e < 2; e++) s[n][2 * r + e] = exp2_approx(fmaf(s[n][2 * r + e], scale_log2, -lse_log2));
            uint32_t pd = pack2<T>(s[n][2 * r], s[n][2 * r + 1]);
            if (dropping) pd &= dropped.row[r].pair_mask(n);
            *reinterpret_cast<uint32_t *>(p_panel + swizzled_offset(il, n) + 4 * c) = pd;
        }
    }
}

// dS = P * (dP - Dsum) of the same 64 queries x 64 keys, stored as 16-bit pairs into the
// warpgroup's panel of the dS tile (ds_panel, laid out as P's). s holds P (store_probabilities),
// dp the accumulator of dPd = dO V^T; dropping, dP = dPd * mask * keep_scale (1 / (1 - p)).
// row_dsum(r, il) is Dsum of this thread's row r (tile row il), asked for as the lse above.
template <typename T, typename RowDsum>
__device__ __forceinline__ void store_score_gradients(unsigned char *ds_panel, const float (&s)[8][4],
                                                      const float (&dp)[8][4], RowDsum row_dsum, bool dropping,
                                                      const TileDropout &dropped, float keep_scale, int row0, int c) {
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int il = row0 + 8 * r;
        const float dsum = row_dsum(r, il);
#pragma unroll
        for (int n = 0; n < 8; n++) {
            float dpd[2];
#pragma unroll
            for (int e = 0; e < 2; e++)
                dpd[e] = dropping ? masked(dp[n][2 * r + e], dropped.row[r].element_mask(n, e)) * keep_scale
                                  : dp[n][2 * r + e];
            *reinterpret_cast<uint32_t *>(ds_panel + swizzled_offset(il, n) + 4 * c) =
                pack2<T>(s[n][2 * r] * (dpd[0] - dsum), s[n][2 * r + 1] * (dpd[1] - dsum));
        }
    }
}

// dQ of one warpgroup (a 64-row wgmma accumulator of 64 columns, as floats) times `scale`,
// staged for the TMA unit at rows row0 (= 16 wq + g) and row0 + 8, columns col0 + 8 n + 2 c
// of the staging tile (dq_stage_offset: panels of 64 rows x 32 floats, 128-byte swizzle).
// odd_g: this thread stores its column blocks in the order n ^ 2, which at D = 128 keeps a
// warp's 8-byte stores clear of bank conflicts (flash_backward_wgmma.cu says why and when).
template <int NB>
__device__ __forceinline__ void stage_dq_rows(unsigned char *dq_stage, const float (&dq)[NB][4], int row0, int col0,
                                              bool odd_g, float scale, int c) {
#pragma unroll
    for (int r = 0; r < 2; r++)
#pragma unroll
        for (int n = 0; n < NB; n++) {
            const int m = odd_g ? n ^ 2 : n;  // the column block this lane stores now
            // (y before x: in this order the code is what the kernels' own loops compiled to;
            // the other order, or one float2 select, swaps two instructions in the SASS.)
            const float y = odd_g ? dq[n ^ 2][2 * r + 1] : dq[n][2 * r + 1];
            const float x = odd_g ? dq[n ^ 2][2 * r] : dq[n][2 * r];
            *reinterpret_cast<float2 *>(dq_stage + dq_stage_offset(row0 + 8 * r, col0 + 8 * m + 2 * c)) =
                make_float2(x * scale, y * scale);
        }
}

// ---- dropout, transposed: the swapAB backwards (flash_backward_swapab.cu, flash_backward_ws_swapab.cu)
// The mask is common/core/philox.h's: probability (query i, key j) kept iff its Philox byte >=
// the threshold, the bytes of the 16 keys 8 n + 2 quad + e (n = 0..7, e = 0, 1) of a 64-key
// block and one query from one call (group attention_dropout_group(bh, i, j / 64, quad, seq)).
// A thread here holds 2 keys x BLOCK_M / 4 queries of a step (its columns 8 n + 2 c + e), i.e.
// 2 of the 16 keys of BLOCK_M / 4 groups: drawing its own would take 8 times the Philox calls
// of a thread that holds query rows (the forward and flash_backward_wgmma.cu). So the
// warpgroup draws each group once, by one thread (which may hold none of its bits, or two),
// and trades the bits through shared memory: warp wq draws the groups of quad wq (here the
// quarter of the 64 keys, keys 8 n + 2 wq + e - not the lane's c), lane L those of the queries q0 + 32 r + L (r = 0 ..
// BLOCK_M / 32 - 1, rounded up: 80 queries take 3 words, whose last 16 bits are the next tile's
// queries, drawn and not read), one call each - as many calls per warpgroup and step as the
// query-row kernels make for the same queries (for 80 queries 20% more: 96 queries drawn). Each of a group's 16 keep flags is then gathered across
// the warp by a ballot (vote.sync: the one instruction that moves a bit from each of 32 lanes
// into one word) into one word, bit L = lane L's query, and the words form the warpgroup's bit
// matrix in shared memory, [key][word r] (STRIDE words a key: 16 bytes for 128 or 80 queries,
// 8 for 64): bit q of word r of key k (the key's place in the warpgroup's 64) says whether query
// q0 + 32 r + q is kept. Lane 0 stores a key's words as one vector (draw_mask_bits; or one
// word at a time, draw_mask_bits_by_word). After a warpgroup barrier
// each thread reads the words of its two keys (KeyMaskBits): a warp's 32-bit load of word r
// reads 8 keys g = 0..7 from 8 slots 16 (8) bytes apart, 8 different banks. Queries and keys
// past seq get bits like any other (Philox reads no memory; every lane must vote anyway); their
// probabilities are zero. In flash_backward_swapab.cu one matrix per warpgroup serves every step:
// the next step's draw comes after the barrier that ends this step, and every read of this
// step's bits (for P^T and dS^T) comes before it (flash_backward_ws_swapab.cu: its own comment).

// Stores a key's words: one vector store.
template <int WORDS>
__device__ __forceinline__ void store_mask_words(uint32_t *at, const uint32_t (&word)[WORDS]) {
    static_assert(WORDS == 2 || WORDS == 4, "a key's words, 8 or 16 bytes");
    if constexpr (WORDS == 4)
        *reinterpret_cast<uint4 *>(at) = make_uint4(word[0], word[1], word[2], word[3]);
    else
        *reinterpret_cast<uint2 *>(at) = make_uint2(word[0], word[1]);
}

// A warp's share of its warpgroup's bit matrix (above) for one step: the keys 8 n + 2 quad + e
// (quad = the warp's place in the warpgroup) x the queries of the group numbers group + r
// group_step (lane L: query q0 + 32 r + L), r < WORDS, stored STRIDE words a key (the words past
// WORDS zero). Every lane of the warp must call it (the ballots).
template <int WORDS, int STRIDE = WORDS>
__device__ __forceinline__ void draw_mask_bits(uint32_t *wg_bits, uint64_t group, uint64_t group_step, int quad,
                                               const PhiloxKeys &keys, uint64_t offset, uint32_t threshold) {
    static_assert(WORDS <= STRIDE, "the drawn words fit a key's slot");
    uint32_t flags[WORDS][4];  // bit 7 of byte 2 (n % 2) + e of word n / 2: key 8 n + 2 quad + e kept
#pragma unroll
    for (int r = 0; r < WORDS; r++) {
        const Philox4 bytes = philox4x32_10_keyed(group + (uint64_t)r * group_step, offset, &keys);
#pragma unroll
        for (int w = 0; w < 4; w++) flags[r][w] = dropout_keep_flags4(bytes.x[w], threshold);
    }
    const bool stores = threadIdx.x % 32 == 0;
#pragma unroll
    for (int n = 0; n < 8; n++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            const uint32_t flag = 0x80u << 8 * (2 * (n % 2) + e);
            uint32_t word[STRIDE];
#pragma unroll
            for (int r = 0; r < STRIDE; r++)
                word[r] = r < WORDS ? __ballot_sync(0xffffffffu, (flags[r][n / 2] & flag) != 0u) : 0u;
            if (stores) store_mask_words<STRIDE>(wg_bits + (8 * n + 2 * quad + e) * STRIDE, word);
        }
}

// draw_mask_bits one word (32 queries) at a time: the 4 flag registers of one Philox call live
// at once instead of 4 WORDS, and each key's word is stored alone (a 32-bit store per key and
// word, by lane 0). For a kernel that draws while its accumulators are in flight
// (flash_backward_ws_swapab.cu: beside S^T and dP^T, whose registers leave no room for 12
// flags). The same bits in the same places as draw_mask_bits<WORDS, STRIDE>; the words past
// WORDS are not written (no reader reads them).
template <int WORDS, int STRIDE>
__device__ __forceinline__ void draw_mask_bits_by_word(uint32_t *wg_bits, uint64_t group, uint64_t group_step,
                                                       int quad, const PhiloxKeys &keys, uint64_t offset,
                                                       uint32_t threshold) {
    static_assert(WORDS <= STRIDE, "the drawn words fit a key's slot");
    const bool stores = threadIdx.x % 32 == 0;
#pragma unroll
    for (int r = 0; r < WORDS; r++) {
        const Philox4 bytes = philox4x32_10_keyed(group + (uint64_t)r * group_step, offset, &keys);
        uint32_t flags[4];  // bit 7 of byte 2 (n % 2) + e of flags[n / 2]: key 8 n + 2 quad + e kept
#pragma unroll
        for (int w = 0; w < 4; w++) flags[w] = dropout_keep_flags4(bytes.x[w], threshold);
#pragma unroll
        for (int n = 0; n < 8; n++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const uint32_t flag = 0x80u << 8 * (2 * (n % 2) + e);
                const uint32_t word = __ballot_sync(0xffffffffu, (flags[n / 2] & flag) != 0u);
                if (stores) wg_bits[(8 * n + 2 * quad + e) * STRIDE + r] = word;
            }
    }
}

// The swapAB backwards' P^T, one accumulator column block n of S^T at a time (s_n: keys g, g + 8
// of the warp's 16 x queries 8 n + 2 c, + 1; lse: those two queries' lse log2(e)): P^T = exp2(S^T
// scale log2(e) - lse log2(e)) in place, packed as 16-bit pairs into registers 2 half and 2 half + 1
// of A fragment n / 2 (half = n % 2): a fragment holds column blocks 2 kk and 2 kk + 1, registers
// 0, 1 key rows g, g + 8 of the first, 2, 3 of the second.
template <typename T>
__device__ __forceinline__ void transposed_probabilities(float (&s_n)[4], float2 lse, float scale_log2,
                                                         uint32_t (&frag)[4], int half) {
    s_n[0] = exp2_approx(fmaf(s_n[0], scale_log2, -lse.x));
    s_n[1] = exp2_approx(fmaf(s_n[1], scale_log2, -lse.y));
    s_n[2] = exp2_approx(fmaf(s_n[2], scale_log2, -lse.x));
    s_n[3] = exp2_approx(fmaf(s_n[3], scale_log2, -lse.y));
    frag[2 * half] = pack2<T>(s_n[0], s_n[1]);
    frag[2 * half + 1] = pack2<T>(s_n[2], s_n[3]);
}

// prmt.b32, byte i of the result the byte that selector nibble i names (0..3 of `first`, 4..7
// of `second`); a nibble with bit 3 set copies that byte's top bit into all 8 bits. Volatile,
// so that it stays where it is used: the compiler would otherwise compute the masks of a whole
// step as early as it could and keep them all (at D = 64 the 64 element masks of dS, which
// spilled).
__device__ __forceinline__ uint32_t permute_bytes(uint32_t first, uint32_t second, uint32_t selector) {
    uint32_t r;
    asm volatile("prmt.b32 %0, %1, %2, %3;\n" : "=r"(r) : "r"(first), "r"(second), "r"(selector));
    return r;
}

// This thread's mask (c = lane % 4) for 32 queries of a step: the words of its two keys (rows
// 0, 1: the warpgroup's keys 16 wq + g and + 8) in the bit matrix, and from them the AND masks
// of its accumulator columns: column block n, queries 8 n + 2 c + e, are bits 8 (n % 4) + 2 c
// + e of word n / 4. A word shifted left by 7 - 2 c (6 - 2 c) has bit 8 k + 2 c (8 k + 2 c + 1)
// at the top of byte k, for all four k at once; one byte permute with sign replication then
// makes each mask. The words are read from shared memory where they are used, 32 queries at a
// time, for P^T and again for dS^T (at D = 64 the eight words held through both spilled).
struct KeyMaskBits {
    uint32_t even[2], odd[2];  // rows 0, 1: the bits of queries 8 k + 2 c (+ 1) at the tops of bytes k

    __device__ __forceinline__ void load(const uint32_t *row0_word, int row_stride, int c) {
#pragma unroll
        for (int row = 0; row < 2; row++) {
            const uint32_t word = row0_word[row * row_stride];
            even[row] = word << (7 - 2 * c);
            odd[row] = word << (6 - 2 * c);
        }
    }
    // The AND mask of the 16-bit pair (queries 8 n + 2 c, + 1) of row `row`: 0xffff where kept.
    __device__ __forceinline__ uint32_t pair_mask(int row, int n) const {
        const uint32_t k = n % 4, lo = 8 | k, hi = 8 | (4 + k);  // byte k of even, of odd
        return permute_bytes(even[row], odd[row], lo | lo << 4 | hi << 8 | hi << 12);
    }
    // The AND mask of the float of query 8 n + 2 c + e of row `row`: all ones where kept.
    __device__ __forceinline__ uint32_t element_mask(int row, int n, int e) const {
        return permute_bytes(even[row], odd[row], (8 | (4 * e + n % 4)) * 0x1111u);
    }
};

#endif  // KERNELS_ATTENTION_FLASH_BACKWARD_COMMON_CUH
