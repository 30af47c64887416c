// Flash attention backward on Hopper with the scores computed transposed ("swapAB"), head dims
// 64 and 128 (D): FlashAttention-3's backward (Shah et al., "FlashAttention-3", 2024; its
// hopper/ code with SdP_swapAB and Mma_dKV_is_RS), written anew on this repository's wgmma,
// TMA and mbarrier wrappers. FlashAttention-3 has no dropout; this one has (DROPOUT, a template
// parameter: without it the kernel is what it was), the forward's mask bit for bit, drawn
// transposed - "dropout, transposed" below says how.
//
// What swapAB means. A block owns 128 keys and walks over the queries a tile at a time; per
// tile the backward needs, with P = softmax(S) recomputed from S = Q K^T and the saved lse,
//   dV += P^T dO,  dP = dO V^T,  dS = P * (dP - Dsum),  dK += dS^T Q,  dQ += dS K.
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
//            statistics 2 x 1 KiB; dropout bits 4 KiB: 167 KiB
//   D = 128: K, V 32 KiB each; Q, dO 2 x 16 KiB each; dS^T 1 panel, 16 KiB; dQ stage 32 KiB;
//            statistics 2 x 0.5 KiB; dropout bits 2 KiB: 180 KiB
//
// Two kernels. flash_backward_swapab_kernel is the one described above, both head dims.
// flash_backward_swapab_producer_kernel (D = 128, ATTENTION_BACKWARD_PRODUCER) runs the same
// per-tile math (SwapabStepMath, shared) warp-specialised, as FlashAttention-3 does: a producer
// warpgroup issues every copy, and the two key warpgroups become consumers that never wait for
// each other, each computing dQ over its own 64 keys. Its comment says what that costs and buys.
#include "common/gpu/cuda_check.h"
#include "kernels/attention/block_order.h"
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

// ---- dropout, transposed ------------------------------------------------------------------
// The mask is common/core/philox.h's: probability (query i, key j) kept iff its Philox byte >=
// the threshold, the bytes of the 16 keys 8 n + 2 quad + e (n = 0..7, e = 0, 1) of a 64-key
// block and one query from one call (group attention_dropout_group(bh, i, j / 64, quad, seq)).
// A thread here holds 2 keys x all BLOCK_M queries of a step, i.e. 2 of the 16 keys of
// BLOCK_M / 4 groups: drawing its own would take 8 times the Philox calls of a thread that
// holds query rows (the forward, flash_backward_wgmma.cu). So the warpgroup draws each group
// once, by a thread that holds none of it, and trades the bits through shared memory: warp wq
// draws the groups of quad wq, lane L those of the queries q0 + 32 r + L (r = 0 ..
// BLOCK_M / 32 - 1), one call each - as many calls per warpgroup and step as the query-row
// kernels make for the same queries. Each of a group's 16 keep flags is then gathered across
// the warp by a ballot (vote.sync: the one instruction that moves a bit from each of 32 lanes
// into one word) into one word, bit L = lane L's query, and the words form the warpgroup's bit
// matrix in shared memory, [key][word r] (MASK_WORDS words a key, 16 bytes at D = 64, 8 at
// 128): bit q of word r of key k (the key's place in the warpgroup's 64) says whether query
// q0 + 32 r + q is kept. Lane 0 stores a key's words as one vector. After a warpgroup barrier
// each thread reads the words of its two keys (KeyMaskBits): a warp's 32-bit load of word r
// reads 8 keys g = 0..7 from 8 slots 16 (8) bytes apart, 8 different banks. Queries and keys
// past seq get bits like any other (Philox reads no memory; every lane must vote anyway); their
// probabilities are zero. One matrix per warpgroup serves every step: the next step's draw
// comes after the barrier that ends this step, and every read of this step's bits (for P^T and
// dS^T) comes before it.

// Stores a key's words: one vector store.
template <int WORDS>
__device__ __forceinline__ void store_mask_words(uint32_t *at, const uint32_t (&word)[WORDS]) {
    static_assert(WORDS == 2 || WORDS == 4, "64 or 128 queries a step");
    if constexpr (WORDS == 4)
        *reinterpret_cast<uint4 *>(at) = make_uint4(word[0], word[1], word[2], word[3]);
    else
        *reinterpret_cast<uint2 *>(at) = make_uint2(word[0], word[1]);
}

// A warp's share of its warpgroup's bit matrix (above) for one step: the keys 8 n + 2 quad + e
// (quad = the warp's place in the warpgroup) x the queries of the group numbers group + r
// group_step (lane L: query q0 + 32 r + L). Every lane of the warp must call it (the ballots).
template <int WORDS>
__device__ __forceinline__ void draw_mask_bits(uint32_t *wg_bits, uint64_t group, uint64_t group_step, int quad,
                                               const PhiloxKeys &keys, uint64_t offset, uint32_t threshold) {
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
            uint32_t word[WORDS];
#pragma unroll
            for (int r = 0; r < WORDS; r++) word[r] = __ballot_sync(0xffffffffu, (flags[r][n / 2] & flag) != 0u);
            if (stores) store_mask_words<WORDS>(wg_bits + (8 * n + 2 * quad + e) * WORDS, word);
        }
}

// (Compiled where the kernel is: elsewhere nothing calls them, and nvcc warns.)
#if WGMMA_AVAILABLE
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

// ---- the per-step math of a consumer warpgroup, shared by both kernels ---------------------
// Steps 1 to 3 of the header (S^T and dP^T issued, the dropout bits drawn, masked P^T, dV,
// dS^T, dK, dS^T stored) are the same whether the two warpgroups then meet at a block barrier
// (flash_backward_swapab_kernel) or never do (flash_backward_swapab_producer_kernel): what
// differs is only how a step starts (which barrier says the stage landed) and what follows the
// stored dS^T (dQ, its staging and who adds it). This struct holds what one thread needs for
// them, fixed for the block; products() runs the steps of one query tile. Everything is
// inlined into the kernels, so the fields live in registers as the kernel's own variables did.
// WARP_SPECIALISED (the producer kernel's consumers, 240 registers a thread instead of 255):
// the caller draws the dropout bits before the tile (draw_dropout_bits), not products() while
// S^T and dP^T run, and products() waits for dV before it computes dS^T, so that P^T's
// fragments are dead by then (both alive, ptxas serialised the wgmmas to fit 240 registers, or
// spilled when dropping); the other consumer's products keep the tensor cores busy meanwhile.
template <typename T, int D, bool DROPOUT, bool WARP_SPECIALISED>
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

    // DROPOUT: the bits of the warpgroup's keys x the next tile's queries into its bit matrix
    // (KeyMaskBits), then the warpgroup's barrier: all four warps' bits are there before any
    // thread reads its two keys' words. The previous tile's readers must be past a barrier
    // already (the block's, or the warp-specialised kernel's warpgroup barrier after dQ).
    __device__ __forceinline__ void draw_dropout_bits(const BwdArgs &a) {
        draw_mask_bits<MASK_WORDS>(wg_mask_bits, drop_group, group_step, wq, a.keys, a.offset, drop_threshold);
        drop_group += MASK_WORDS * group_step;  // the next tile's first query: BLOCK_M further
        warpgroup_barrier(barrier_warpgroup);
    }

    // One query tile from q0: Q and dO at q_addr, do_addr (QO_PANEL between their 64-column
    // panels), its statistics (lse log2(e), then Dsum, BLOCK_M floats each) at stage_stats.
    // Returns with dV (the older) and dK (the newer) as the two wgmma groups still in flight,
    // reading pt, dst, Q and dO (WARP_SPECIALISED: dK only, reading dst and Q); dS^T stored by
    // this thread (no fence, no barrier: the caller's).
    __device__ __forceinline__ void products(const BwdArgs &a, int q0, uint32_t q_addr, uint32_t do_addr,
                                             const float *stage_stats, float (&s)[NQ][4], float (&dp)[NQ][4],
                                             uint32_t (&pt)[KQ][4], uint32_t (&dst)[KQ][4], float (&dk)[D / 8][4],
                                             float (&dv)[D / 8][4]) {
        // The tile's lse log2(e) and Dsum, per query; this thread's are at 8 n + 2 c, + 1.
        const float2 *lse_log2 = reinterpret_cast<const float2 *>(stage_stats);
        const float2 *dsum = lse_log2 + BLOCK_M / 2;

        // 1. S^T = K_w Q^T and dP^T = V_w dO^T, two groups: step kk takes 16 of the D columns
        // (panel kk / 4, 32 bytes into its rows); the warpgroup's keys start 64 rows (8192
        // bytes) into each panel of K and V; B is the whole query tile (BLOCK_M rows).
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            const uint32_t kv = (kk / 4) * SW_KV_PANEL + key_group * 64 * 128 + (kk % 4) * 32;
            const uint32_t qo = (kk / 4) * QO_PANEL + (kk % 4) * 32;
            wgmma_ss<T, BLOCK_M>(s, wgmma_descriptor(k_addr + kv, 0, 1024), wgmma_descriptor(q_addr + qo, 0, 1024),
                                 kk > 0);
        }
        wgmma_commit();
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            const uint32_t kv = (kk / 4) * SW_KV_PANEL + key_group * 64 * 128 + (kk % 4) * 32;
            const uint32_t qo = (kk / 4) * QO_PANEL + (kk % 4) * 32;
            wgmma_ss<T, BLOCK_M>(dp, wgmma_descriptor(v_addr + kv, 0, 1024), wgmma_descriptor(do_addr + qo, 0, 1024),
                                 kk > 0);
        }
        wgmma_commit();

        // While the tensor cores work: the dropout bits of the warpgroup's keys x the tile's
        // queries into its bit matrix (the previous step's readers are past the barrier that
        // ended it: the block's, or the producer kernel's warpgroup barrier after dQ), then the
        // warpgroup's barrier: all four warps' bits are there before any thread reads its two
        // keys' words (keep_words, where P^T and dS^T are masked).
        KeyMaskBits keep;
        const uint32_t *keep_words = wg_mask_bits + (16 * wq + g) * MASK_WORDS;  // row 1: 8 keys further
        if constexpr (DROPOUT && !WARP_SPECIALISED) draw_dropout_bits(a);

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
        // P^T as A fragments (16-bit pairs): fragment kk = column blocks 2 kk and 2 kk + 1,
        // registers 0, 1: key rows g, g + 8 of block 2 kk; 2, 3: of block 2 kk + 1.
#pragma unroll
        for (int n = 0; n < NQ; n++) {
            const float2 l = lse_log2[4 * n + c];
            s[n][0] = exp2_approx(fmaf(s[n][0], scale_log2, -l.x));
            s[n][1] = exp2_approx(fmaf(s[n][1], scale_log2, -l.y));
            s[n][2] = exp2_approx(fmaf(s[n][2], scale_log2, -l.x));
            s[n][3] = exp2_approx(fmaf(s[n][3], scale_log2, -l.y));
            pt[n / 2][2 * (n % 2)] = pack2<T>(s[n][0], s[n][1]);
            pt[n / 2][2 * (n % 2) + 1] = pack2<T>(s[n][2], s[n][3]);
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
        if constexpr (WARP_SPECIALISED) {  // dV too: P^T's fragments die here
            wgmma_wait<0>();
            wgmma_settle(dv);
            wgmma_settle(pt);
        } else {
            wgmma_wait<1>();
        }
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

template <typename T, int D, bool DETERMINISTIC, bool DROPOUT>
__global__ void __launch_bounds__(SW_THREADS, 1)
    flash_backward_swapab_kernel(const __grid_constant__ CUtensorMap q_map, const __grid_constant__ CUtensorMap kv_map,
                                 const __grid_constant__ CUtensorMap do_map, const __grid_constant__ CUtensorMap dq_map,
                                 const __grid_constant__ BwdArgs a, const KeyBlockOrder order, float scale) {
#if WGMMA_AVAILABLE
    static_assert(D == 64 || D == 128, "head dims 64 and 128");
    using Tile = SwapabTile<D>;
    constexpr int BLOCK_M = Tile::BLOCK_M, PANELS = Tile::PANELS, QO_PANEL = Tile::QO_PANEL;
    constexpr int KV_BYTES = Tile::KV_BYTES, QO_BYTES = Tile::QO_BYTES;
    constexpr int QUERY_PARTS = 2 * PANELS;  // TMA copies of a query tile: Q's panels, dO's
    constexpr int NQ = BLOCK_M / 8;   // accumulator column blocks of S^T and dP^T (8 queries each)
    constexpr int KQ = BLOCK_M / 16;  // A fragments of P^T and dS^T (16 queries each)
    extern __shared__ unsigned char smem_raw[];
    unsigned char *k_tile = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
    unsigned char *v_tile = k_tile + KV_BYTES;
    unsigned char *q_tiles = v_tile + KV_BYTES;        // two stages
    unsigned char *do_tiles = q_tiles + 2 * QO_BYTES;  // two stages
    unsigned char *ds_tile = do_tiles + 2 * QO_BYTES;  // dS^T, [key][query], panels of 64 queries
    unsigned char *dq_stage = ds_tile + Tile::DS_BYTES;  // dQ of a query tile, floats
    float *stats = reinterpret_cast<float *>(dq_stage + Tile::DQ_BYTES);  // two stages of STATS_FLOATS
    // The dropout bit matrices (KeyMaskBits), [warpgroup][64 keys][MASK_WORDS]; 16-byte aligned.
    uint32_t *mask_bits = reinterpret_cast<uint32_t *>(stats + 2 * Tile::STATS_FLOATS);

    __shared__ uint64_t kv_full, qdo_full[2];  // mbarriers: K and V landed; a stage's Q, dO, statistics landed

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warpgroup = warp / 4, wq = warp % 4;
    const int g = lane / 4, c = lane % 4;
    const int bh_count = a.batch * a.heads;
    const FlashBlock blk = flash_key_block_at(blockIdx.x, order.key_blocks, bh_count, order.group_heads);
    const int key_block = blk.query_block, bh = blk.bh, b = bh / a.heads, h = bh % a.heads, seq = a.seq;
    const int k0 = key_block * SW_BLOCK_N;
    const int key0 = k0 + 64 * warpgroup;  // this warpgroup's first key
    const QkvView view = {(int64_t)a.batch * a.qkv_row, (int64_t)b * a.qkv_row + (int64_t)h * 3 * D};
    const float scale_log2 = scale * LOG2E;
    // Causal, the block starts at its diagonal query tile (k0 is a multiple of BLOCK_M).
    const int m_start = a.causal ? k0 : 0;
    const int steps = (seq - m_start + BLOCK_M - 1) / BLOCK_M;
    // This head's rows of the tile statistics (flash_kernels.cuh): lse log2(e), then Dsum.
    const int stats_row = flash_tile_stats_row(seq);
    const float *lse_log2_row = a.tile_stats + (int64_t)bh * stats_row;
    const float *dsum_row = lse_log2_row + (int64_t)bh_count * stats_row;
    // Dropout (DROPOUT): the warpgroup's bit matrix; drop_group, the Philox group of this lane's
    // first query of the step, attention_dropout_group(global bh, q0 + lane, key0 / 64, wq, seq)
    // (global bh: the head's index in the unsharded layer, HeadRange); of the query 32 further
    // group_step more (4 groups per key block, key_blocks per query).
    constexpr int MASK_WORDS = Tile::MASK_WORDS;
    uint32_t *wg_mask_bits = mask_bits + warpgroup * 64 * MASK_WORDS;
    const uint32_t drop_threshold = dropout_threshold(a.p_drop);
    const float keep_scale = DROPOUT ? dropout_keep_scale(a.p_drop) : 1.0f;
    const uint64_t group_step = 32 * 4 * attention_key_blocks(seq);
    uint64_t drop_group = attention_dropout_group(a.drop.global_bh(b, h), m_start + lane, key0 / 64, wq, seq);

    // Query tile `step` into stage step % 2 as QUERY_PARTS TMA copies (Q's 64-column panels,
    // then dO's), each arriving on the stage's mbarrier with its bytes; the part of Q's panel
    // 0 also brings the tile's statistics (two bulk copies of BLOCK_M floats). In the loop,
    // part p is issued by lane 0 of warp p % 2 of warpgroup p / 2 (spreading the issuing
    // threads, which wait until the TMA unit takes each copy). Columns: head h's q, k, v at
    // h * 3d, + d, + 2d in qkv; its dO at h * d.
    auto load_query_part = [&](int step, int part) {
        uint64_t *bar = &qdo_full[step % 2];
        const int row = m_start + step * BLOCK_M, panel = part % PANELS;
        if (part < PANELS) {
            mbarrier_arrive_expect_tx(bar, QO_PANEL + (panel == 0 ? Tile::STATS_FLOATS * 4 : 0));
            tma_load_3d(q_tiles + (step % 2) * QO_BYTES + panel * QO_PANEL, &q_map, h * 3 * D + 64 * panel, b, row,
                        bar);
            if (panel == 0) {
                float *stage_stats = stats + (step % 2) * Tile::STATS_FLOATS;
                bulk_load_1d(stage_stats, lse_log2_row + row, BLOCK_M * 4, bar);
                bulk_load_1d(stage_stats + BLOCK_M, dsum_row + row, BLOCK_M * 4, bar);
            }
        } else {
            mbarrier_arrive_expect_tx(bar, QO_PANEL);
            tma_load_3d(do_tiles + (step % 2) * QO_BYTES + panel * QO_PANEL, &do_map, h * D + 64 * panel, b, row, bar);
        }
    };
    if (threadIdx.x == 0) {
        mbarrier_init(&kv_full, 1), mbarrier_init(&qdo_full[0], QUERY_PARTS);
        mbarrier_init(&qdo_full[1], QUERY_PARTS);
        fence_shared_for_wgmma();  // the initialised barriers, for the TMA unit
        mbarrier_arrive_expect_tx(&kv_full, 2 * KV_BYTES);
        for (int panel = 0; panel < PANELS; panel++) {
            tma_load_3d(k_tile + panel * SW_KV_PANEL, &kv_map, h * 3 * D + D + 64 * panel, b, k0, &kv_full);
            tma_load_3d(v_tile + panel * SW_KV_PANEL, &kv_map, h * 3 * D + 2 * D + 64 * panel, b, k0, &kv_full);
        }
        for (int step = 0; step < 2 && step < steps; step++)
            for (int part = 0; part < QUERY_PARTS; part++) load_query_part(step, part);
    }
    __syncthreads();  // the barriers are initialised

    // dK and dV of keys key0 + 16 wq + g (+ 8): wgmma accumulators of 64 keys x D columns.
    float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) dk[n][e] = dv[n][e] = 0.0f;

    const uint32_t k_addr = smem_addr(k_tile), v_addr = smem_addr(v_tile), ds_addr = smem_addr(ds_tile);
    // The staged dQ of the tile starting at q0 into the accumulator (DETERMINISTIC: stored into
    // slice key_block, matrix key_block * batch * heads + bh of dq_map's): lane 0 of warps 2
    // and 3 of warpgroup w add its panels 2 w and 2 w + 1 (32 columns each). D = 64: the
    // warpgroup's queries q0 + 64 w .. + 63, columns 0..63 (none if they all lie past seq);
    // D = 128: queries q0 .. + 63, columns 64 w .. + 63. Rows past seq are clipped by the TMA.
    auto add_dq_tile = [&](int q0) {
        if (lane != 0 || wq < 2) return;
        const int half = wq - 2, panel = 2 * warpgroup + half;
        const int col = D == 64 ? 32 * half : 64 * warpgroup + 32 * half;
        const int row = D == 64 ? q0 + 64 * warpgroup : q0;
        if (row >= seq) return;
        const float *staged = reinterpret_cast<const float *>(dq_stage + panel * DQ_STAGE_PANEL);
        if constexpr (DETERMINISTIC)
            tma_store_3d(&dq_map, col, row, key_block * bh_count + bh, staged);
        else
            tma_reduce_add_3d(&dq_map, col, row, bh, staged);
    };

    const int j_first = key0 + 16 * wq + g;  // this thread's keys: j_first and j_first + 8
    // Steps 1 to 3 of each tile (SwapabStepMath; the fields in its order).
    SwapabStepMath<T, D, DROPOUT, false> math = {k_addr, v_addr, ds_tile, wg_mask_bits, warpgroup, warpgroup, wq, g, c,
                                          key0, j_first, 64 * warpgroup + 16 * wq + g, seq, scale_log2, keep_scale,
                                          drop_threshold, group_step, drop_group};
    mbarrier_wait(&kv_full, 0);
    for (int step = 0; step < steps; step++) {
        const int q0 = m_start + step * BLOCK_M;
        mbarrier_wait(&qdo_full[step % 2], (step / 2) & 1);
        const uint32_t q_addr = smem_addr(q_tiles + (step % 2) * QO_BYTES);
        const uint32_t do_addr = smem_addr(do_tiles + (step % 2) * QO_BYTES);

        // 1 - 3: S^T, dP^T, P^T, dV, dS^T, dK; dV and dK still in flight, dS^T stored.
        float s[NQ][4], dp[NQ][4];
        uint32_t pt[KQ][4], dst[KQ][4];
        math.products(a, q0, q_addr, do_addr, stats + (step % 2) * Tile::STATS_FLOATS, s, dp, pt, dst, dk, dv);
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
        const bool odd_g = D == 128 && (g & 1);
#pragma unroll
        for (int r = 0; r < 2; r++)
#pragma unroll
            for (int n = 0; n < 8; n++) {
                const int m = odd_g ? n ^ 2 : n;  // the column block this lane stores now
                const float2 v = odd_g ? make_float2(dq[n ^ 2][2 * r], dq[n ^ 2][2 * r + 1])
                                       : make_float2(dq[n][2 * r], dq[n][2 * r + 1]);
                const uint32_t at = dq_stage_offset(16 * wq + g + 8 * r, 64 * warpgroup + 8 * m + 2 * c);
                *reinterpret_cast<float2 *>(dq_stage + at) = make_float2(v.x * scale, v.y * scale);
            }
        fence_shared_for_wgmma();  // the staged dQ, for the TMA unit
        // 6. Both warpgroups are done with this tile: its Q, dO and statistics stage is free, dS^T
        // may be overwritten, dQ is staged.
        __syncthreads();
        add_dq_tile(q0);  // it is added while the next tile runs
        if (lane == 0 && wq < 2 && 2 * warpgroup + wq < QUERY_PARTS && step + 2 < steps)
            load_query_part(step + 2, 2 * warpgroup + wq);
    }
    bulk_wait_all();  // before the block's shared memory goes away

    // dK (scaled) and dV (dropping: times 1 / (1 - p)) of this thread's keys into dqkv's k and v slots.
    write_dk_dv_rows<T>(static_cast<T *>(a.dqkv), view, dk, dv, j_first, seq, scale, keep_scale);
#else
    (void)q_map, (void)kv_map, (void)do_map, (void)dq_map, (void)a, (void)order, (void)scale;
    __trap();
#endif
}

// ---- the warp-specialised variant at head dim 128 (ATTENTION_BACKWARD_PRODUCER, attention.h) --
// What holds the kernel above back at D = 128: its two warpgroups meet at a block barrier
// twice per query tile (before dQ, which needs both warpgroups' dS^T, and at the end, which
// frees the stage). They issue their wgmmas to the same tensor cores at the same moments, so
// one warpgroup's products run second and it arrives at the barrier late; meanwhile both do
// their element-wise work (exp2, dS^T, packing) with the tensor cores idle (Nsight Compute on
// an H200: 14% of warp samples at the barrier before dQ). FlashAttention-3's backward (Shah
// et al., 2024; its hopper/ kernels) splits the block by job instead, as our forward does
// (flash_forward_wgmma.cu):
//   - a PRODUCER warpgroup (warpgroup 0, 24 registers a thread after setmaxnreg): lane 0 of
//     warp 0 loads K and V once and then, per query tile, Q, dO and the tile statistics into a
//     stage of a 2-stage ring as soon as both consumers have released it (mbarriers full[s],
//     empty[s]); lane 0 of warp 1 + w adds consumer w's staged dQ into the accumulator by TMA
//     reductions (mbarriers dq_full[w], dq_empty[w]). The consumers issue no copies at all,
//     and no consumer thread waits until the TMA unit takes a copy.
//   - two CONSUMER warpgroups (warpgroups 1, 2; 240 registers a thread), consumer w the keys
//     [64 w, 64 w + 64) of the block, each running the per-step math above (SwapabStepMath)
//     at its own pace. No block barrier after the start: a consumer waits only for data (the
//     stage, its own dQ buffer) and for its own four warps (warpgroup barriers, ids 2 and 3).
//     So while one consumer does its element-wise work the other's wgmmas keep the tensor
//     cores busy, and they drift into alternating on their own.
// The price: dQ. Above, dQ = dS K over all 128 keys is split by columns between the
// warpgroups, which needs the other warpgroup's dS^T - the very barrier this variant drops.
// Here consumer w computes dQ_w = dS_w K_w over ITS OWN 64 keys only (A = its dS^T rows read
// MN-major, B = K's rows 64 w .. 64 w + 63 read MN-major, N = 128 columns spanning K's two
// panels: 4 wgmmas of m64n128k16), and both partial sums are added into dQ's accumulator:
// twice the TMA reduction traffic of the kernel above (64 rows x 128 floats per consumer and
// tile instead of 64 x 64), and twice the staging memory, bought back by two consumers that
// never wait for each other. DETERMINISTIC, each consumer stores into its own slice of 64 keys
// (flash_backward_swapab_slice_keys(1) is 64; the workspace holds that many slices).
//
// Per query tile `step` (stage step % 2), consumer w:
//   DROPOUT: draw the tile's bits (+ warpgroup barrier); wait full[stage];
//   SwapabStepMath::products (S^T, dP^T, P^T, dV, then once dV has landed dS^T, dK; dS^T
//   stored); fence + warpgroup barrier (its dS^T complete); issue dQ_w; wait for dK (Q and dO
//   no longer read: every thread arrives on empty[stage], 256 arrivals complete it); wait for
//   dQ_w; wait dq_empty[w] (its staging buffer free); stage dQ_w (times the scale, the layout
//   above); fence + warpgroup barrier (staged; and every warp's dQ wgmma, which read dS^T, has
//   landed: the next tile may overwrite dS^T and the dropout bits); one thread arrives on
//   dq_full[w].
// The mbarriers' phases, each completed once per use (parity = use & 1):
//   kv_full      1 arrival + the bytes of K and V; used once (parity 0)
//   full[s]      1 arrival (the producer's expect_tx) + the tile's bytes; use u = tile 2 u + s
//                (consumers wait parity (step / 2) & 1)
//   empty[s]     256 arrivals (every consumer thread, once per tile); the producer waits use
//                u - 1 (parity (u - 1) & 1) before filling use u >= 1. Neither side can run two
//                phases ahead of the other: a stage is refilled only after both consumers
//                released it, and released only after it was filled.
//   dq_full[w]   1 arrival (consumer w's elected thread) per tile: the dQ thread waits parity
//                step & 1
//   dq_empty[w]  1 arrival (the dQ thread, once the reductions have read the buffer) per
//                tile; consumer w waits use step - 1 before staging tile step >= 1
// Named barriers: 0 (__syncthreads, once, after the mbarriers are initialised), 2 and 3
// (warpgroup_barrier of warpgroups 1 and 2: the dropout bits, dS^T, the staged dQ); the
// producer warpgroup uses none.
//
// Registers (setmaxnreg, as the forward's Shape): 384 threads x 168 at launch = 64512 =
// 128 x 24 (producer) + 256 x 240 (consumers). The kernel above holds, while it computes dS^T,
// S^T, dP^T (32 floats each), dK, dV (64 each) and P^T's and dS^T's fragments (16 + 16), and
// took 238 registers (247 dropping) where it had 255. In 240 ptxas serialised the wgmmas
// (C7512, "insufficient register resources") and spilled when dropping, so here products()
// waits for dV before dS^T (P^T's fragments dead: 16 fewer) and the dropout bits are drawn
// before S^T and dP^T are issued, not while their 64 accumulators are in flight. dQ_w (64
// floats) is live only once S^T, dP^T and P^T's fragments are dead. ptxas -v (CUDA 13.0,
// sm_90a): 168 at launch for all four instantiations, no wgmma serialisation; no spills, but
// deterministic and dropping 8 bytes, stored once before the warpgroups part and loaded once
// after the consumers' loop (and in the producer), outside any loop.
//
// Shared memory: K, V 32 KiB each; 2 stages of Q and dO, 16 KiB each; dS^T 16 KiB (consumer
// w's rows 64 w ..); dQ staging 2 x 32 KiB; statistics 2 x 0.5 KiB; dropout bits 2 KiB; + 1
// KiB for the alignment: 212 KiB of Hopper's 227. A third stage (+32.5 KiB) would not fit.
struct ProducerShape {
    static constexpr int D = 128;
    using Tile = SwapabTile<D>;
    static constexpr int THREADS = 384;  // a producer warpgroup and two consumers
    static constexpr int STAGES = 2;     // of Q, dO and the statistics
    static constexpr int PRODUCER_REGS = 24, CONSUMER_REGS = 240;
    // What each thread holds at launch (ptxas -v reports it: 168) and so the block's pool, which
    // setmaxnreg only redistributes.
    static constexpr int LAUNCH_REGS = 65536 / THREADS / 8 * 8;
    static_assert(PRODUCER_REGS % 8 == 0 && CONSUMER_REGS % 8 == 0, "setmaxnreg takes multiples of 8");
    static_assert(128 * (PRODUCER_REGS + 2 * CONSUMER_REGS) <= THREADS * LAUNCH_REGS, "the block's pool");
    static_assert(CONSUMER_REGS >= LAUNCH_REGS && PRODUCER_REGS <= LAUNCH_REGS, "who gives, who takes");
    // K, V, the stages of Q and dO, dS^T, one dQ staging buffer per consumer (Tile::DQ_BYTES: 64
    // queries x 128 floats), the stages' statistics, the dropout bits, the alignment.
    static constexpr size_t SMEM = 2 * Tile::KV_BYTES + 2 * STAGES * Tile::QO_BYTES + Tile::DS_BYTES +
                                   2 * Tile::DQ_BYTES + STAGES * Tile::STATS_FLOATS * 4 + Tile::MASK_BYTES + 1024;
    static_assert(SMEM <= 227 * 1024, "Hopper's limit per block");
};

template <typename T, bool DETERMINISTIC, bool DROPOUT>
__global__ void __launch_bounds__(ProducerShape::THREADS, 1)
    flash_backward_swapab_producer_kernel(const __grid_constant__ CUtensorMap q_map,
                                          const __grid_constant__ CUtensorMap kv_map,
                                          const __grid_constant__ CUtensorMap do_map,
                                          const __grid_constant__ CUtensorMap dq_map, const __grid_constant__ BwdArgs a,
                                          const KeyBlockOrder order, float scale) {
#if WGMMA_AVAILABLE
    using S = ProducerShape;
    constexpr int D = S::D, STAGES = S::STAGES;
    using Tile = SwapabTile<D>;
    using Math = SwapabStepMath<T, D, DROPOUT, true>;
    constexpr int BLOCK_M = Tile::BLOCK_M, PANELS = Tile::PANELS, QO_PANEL = Tile::QO_PANEL;
    constexpr int KV_BYTES = Tile::KV_BYTES, QO_BYTES = Tile::QO_BYTES, MASK_WORDS = Tile::MASK_WORDS;
    constexpr int NQ = Math::NQ, KQ = Math::KQ;
    extern __shared__ unsigned char smem_raw[];
    unsigned char *k_tile = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
    unsigned char *v_tile = k_tile + KV_BYTES;
    unsigned char *q_tiles = v_tile + KV_BYTES;             // STAGES stages
    unsigned char *do_tiles = q_tiles + STAGES * QO_BYTES;  // STAGES stages
    unsigned char *ds_tile = do_tiles + STAGES * QO_BYTES;  // dS^T, [key][query]: consumer w's rows 64 w ..
    unsigned char *dq_stages = ds_tile + Tile::DS_BYTES;    // consumer w's staged dQ at w * DQ_BYTES
    float *stats = reinterpret_cast<float *>(dq_stages + 2 * Tile::DQ_BYTES);  // STAGES x STATS_FLOATS
    // The dropout bit matrices (KeyMaskBits), [consumer][64 keys][MASK_WORDS]; 16-byte aligned.
    uint32_t *mask_bits = reinterpret_cast<uint32_t *>(stats + STAGES * Tile::STATS_FLOATS);

    // The mbarriers (the phases: the comment above the kernel).
    __shared__ uint64_t kv_full, full[STAGES], empty[STAGES], dq_full[2], dq_empty[2];

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warpgroup = warp / 4;
    const int bh_count = a.batch * a.heads;
    const FlashBlock blk = flash_key_block_at(blockIdx.x, order.key_blocks, bh_count, order.group_heads);
    const int key_block = blk.query_block, bh = blk.bh, b = bh / a.heads, h = bh % a.heads, seq = a.seq;
    const int k0 = key_block * SW_BLOCK_N;
    // Causal, the block starts at its diagonal query tile (k0 is a multiple of BLOCK_M).
    const int m_start = a.causal ? k0 : 0;
    const int steps = (seq - m_start + BLOCK_M - 1) / BLOCK_M;  // >= 1: k0 < seq

    if (threadIdx.x == 0) {
        mbarrier_init(&kv_full, 1);
        for (int s = 0; s < STAGES; s++) mbarrier_init(&full[s], 1), mbarrier_init(&empty[s], 256);
        for (int w = 0; w < 2; w++) mbarrier_init(&dq_full[w], 1), mbarrier_init(&dq_empty[w], 1);
        fence_shared_for_wgmma();  // the initialised barriers, for the TMA unit
    }
    __syncthreads();  // the only block-wide barrier: from here on the warpgroups go their own ways

    if (warpgroup == 0) {  // ---- the producer
        warpgroup_release_registers<S::PRODUCER_REGS>();
        if (lane != 0 || warp > 2) return;
        if (warp == 0) {
            // K and V once; then query tile `step` into stage step % STAGES once both consumers
            // have released the tile before it there: Q's and dO's 64-column panels (head h's q
            // at h * 3d in qkv, its dO at h * d) and the tile's lse log2(e) and Dsum (two bulk
            // copies of BLOCK_M floats from this head's rows of the tile statistics), all
            // counted on the stage's full barrier.
            const int stats_row = flash_tile_stats_row(seq);
            const float *lse_log2_row = a.tile_stats + (int64_t)bh * stats_row;
            const float *dsum_row = lse_log2_row + (int64_t)bh_count * stats_row;
            mbarrier_arrive_expect_tx(&kv_full, 2 * KV_BYTES);
            for (int panel = 0; panel < PANELS; panel++) {
                tma_load_3d(k_tile + panel * SW_KV_PANEL, &kv_map, h * 3 * D + D + 64 * panel, b, k0, &kv_full);
                tma_load_3d(v_tile + panel * SW_KV_PANEL, &kv_map, h * 3 * D + 2 * D + 64 * panel, b, k0, &kv_full);
            }
            for (int step = 0; step < steps; step++) {
                const int stage = step % STAGES, use = step / STAGES;
                if (use > 0) mbarrier_wait(&empty[stage], (use - 1) & 1);
                const int row = m_start + step * BLOCK_M;
                uint64_t *bar = &full[stage];
                mbarrier_arrive_expect_tx(bar, 2 * QO_BYTES + Tile::STATS_FLOATS * 4);
                for (int panel = 0; panel < PANELS; panel++) {
                    tma_load_3d(q_tiles + stage * QO_BYTES + panel * QO_PANEL, &q_map, h * 3 * D + 64 * panel, b,
                                row, bar);
                    tma_load_3d(do_tiles + stage * QO_BYTES + panel * QO_PANEL, &do_map, h * D + 64 * panel, b, row,
                                bar);
                }
                float *stage_stats = stats + stage * Tile::STATS_FLOATS;
                bulk_load_1d(stage_stats, lse_log2_row + row, BLOCK_M * 4, bar);
                bulk_load_1d(stage_stats + BLOCK_M, dsum_row + row, BLOCK_M * 4, bar);
            }
        } else {
            // Consumer w's staged dQ of each tile into the accumulator: four boxes of 64 rows x
            // 32 floats (rows past seq clipped by the TMA), or DETERMINISTIC stored into the
            // consumer's slice of 64 keys (matrix (2 key_block + w) * batch * heads + bh of
            // dq_map's). A consumer whose keys all lie past seq has dS = 0: nothing to add, and
            // its slice does not exist (the launch has ceil(seq / 64) slices).
            const int w = warp - 1;
            const bool has_keys = k0 + 64 * w < seq;
            const int matrix = DETERMINISTIC ? (2 * key_block + w) * bh_count + bh : bh;
            const float *staged = reinterpret_cast<const float *>(dq_stages + w * Tile::DQ_BYTES);
            for (int step = 0; step < steps; step++) {
                mbarrier_wait(&dq_full[w], step & 1);
                const int row = m_start + step * BLOCK_M;
                if (has_keys) {
                    for (int panel = 0; panel < D / 32; panel++) {
                        const float *box = staged + panel * (DQ_STAGE_PANEL / 4);
                        if constexpr (DETERMINISTIC)
                            tma_store_3d(&dq_map, 32 * panel, row, matrix, box);
                        else
                            tma_reduce_add_3d(&dq_map, 32 * panel, row, matrix, box);
                    }
                }
                bulk_wait_read();  // the TMA unit has read the buffer: the consumer may stage the next tile
                mbarrier_arrive(&dq_empty[w]);
            }
            bulk_wait_all();  // before the block's shared memory goes away
        }
        return;
    }

    // ---- the consumers
    warpgroup_claim_registers<S::CONSUMER_REGS>();
    const int consumer = warpgroup - 1;  // its keys: [64 consumer, 64 consumer + 64) of the block
    const int wq = warp % 4, g = lane / 4, c = lane % 4;
    const int key0 = k0 + 64 * consumer;     // the consumer's first key
    const int j_first = key0 + 16 * wq + g;  // this thread's keys: j_first and j_first + 8
    const float keep_scale = DROPOUT ? dropout_keep_scale(a.p_drop) : 1.0f;
    // Dropout: as the kernel above (its "Dropout" comment), per consumer.
    const uint64_t group_step = 32 * 4 * attention_key_blocks(seq);
    const uint64_t drop_group = attention_dropout_group(a.drop.global_bh(b, h), m_start + lane, key0 / 64, wq, seq);
    // Steps 1 to 3 of each tile (SwapabStepMath; the fields in its order): keys 64 consumer ..
    // of K, V and dS^T; warpgroup barriers of the hardware warpgroup (ids 2, 3).
    Math math = {smem_addr(k_tile), smem_addr(v_tile), ds_tile, mask_bits + consumer * 64 * MASK_WORDS, consumer,
                 warpgroup, wq, g, c, key0, j_first, 64 * consumer + 16 * wq + g, seq, scale * LOG2E, keep_scale,
                 dropout_threshold(a.p_drop), group_step, drop_group};

    // dK and dV of keys j_first, j_first + 8: wgmma accumulators of 64 keys x 128 columns.
    float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) dk[n][e] = dv[n][e] = 0.0f;

    // dQ_w = dS_w K_w: A = the consumer's 64 rows of dS^T, B = its 64 rows of K (in both panels).
    const uint32_t ds_rows = smem_addr(ds_tile) + consumer * 64 * 128, k_rows = smem_addr(k_tile) + consumer * 64 * 128;
    unsigned char *dq_stage = dq_stages + consumer * Tile::DQ_BYTES;
    mbarrier_wait(&kv_full, 0);
    for (int step = 0; step < steps; step++) {
        const int stage = step % STAGES, q0 = m_start + step * BLOCK_M;
        // The dropout bits first (no data needed; the previous tile's readers are past its last
        // warpgroup barrier), while the other consumer's products run.
        if constexpr (DROPOUT) math.draw_dropout_bits(a);
        mbarrier_wait(&full[stage], (step / STAGES) & 1);
        const uint32_t q_addr = smem_addr(q_tiles + stage * QO_BYTES);
        const uint32_t do_addr = smem_addr(do_tiles + stage * QO_BYTES);

        // 1 - 3: S^T, dP^T, P^T, dV, dS^T, dK; dK still in flight, dS^T stored.
        float s[NQ][4], dp[NQ][4];
        uint32_t pt[KQ][4], dst[KQ][4];
        math.products(a, q0, q_addr, do_addr, stats + stage * Tile::STATS_FLOATS, s, dp, pt, dst, dk, dv);
        fence_shared_for_wgmma();     // dS^T, for the tensor cores
        warpgroup_barrier(warpgroup);  // all four warps' rows of it: this consumer's only

        // 4. dQ_w = dS_w K_w (queries x 128 columns) over the consumer's 64 keys: A = dS read
        // MN-major from dS^T, B = K MN-major, N = 128 spanning K's two panels (SW_KV_PANEL
        // apart, as dV's B = dO); step kk takes 16 keys, 16 rows (2048 bytes) further in both.
        // Only dK is still in flight (products() waited for dV), so dQ's 64 floats take the
        // registers of S^T, dP^T and P^T's fragments, all dead.
        float dq[D / 8][4];
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < 64 / 16; kk++)
            wgmma_ss<T, D, 1, 1>(dq, wgmma_descriptor(ds_rows + kk * 2048, SW_DS_PANEL, 1024),
                                 wgmma_descriptor(k_rows + kk * 2048, SW_KV_PANEL, 1024), kk > 0);
        wgmma_commit();
        // dK has landed: every wgmma that reads this stage's Q and dO is done (S^T, dP^T and
        // dV before it), and this thread read the statistics long ago - it releases the stage.
        wgmma_wait<1>();
        wgmma_settle(dk);
        wgmma_settle(dst);
        mbarrier_arrive(&empty[stage]);
        wgmma_wait<0>();
        wgmma_settle(dq);

        // 5. dQ_w (times the scale) staged once the previous tile's reductions have read the
        // buffer: rows 16 wq + g (+ 8) of the 64 queries, columns 8 n + 2 c (four panels of 32
        // columns); the threads of odd g store their column blocks in the order n ^ 2 (as the
        // kernel above at D = 128, flash_backward_wgmma.cu says why).
        if (step > 0) mbarrier_wait(&dq_empty[consumer], (step - 1) & 1);
        const bool odd_g = g & 1;
#pragma unroll
        for (int r = 0; r < 2; r++)
#pragma unroll
            for (int n = 0; n < D / 8; n++) {
                const int m = odd_g ? n ^ 2 : n;  // the column block this lane stores now
                const float2 v = odd_g ? make_float2(dq[n ^ 2][2 * r], dq[n ^ 2][2 * r + 1])
                                       : make_float2(dq[n][2 * r], dq[n][2 * r + 1]);
                const uint32_t at = dq_stage_offset(16 * wq + g + 8 * r, 8 * m + 2 * c);
                *reinterpret_cast<float2 *>(dq_stage + at) = make_float2(v.x * scale, v.y * scale);
            }
        fence_shared_for_wgmma();  // the staged dQ, for the TMA unit
        // All four warps have staged their rows, and all four have waited for their part of
        // the dQ wgmma: dS^T and the dropout bits may be overwritten by the next tile.
        warpgroup_barrier(warpgroup);
        if (threadIdx.x % 128 == 0) mbarrier_arrive(&dq_full[consumer]);  // the producer's dQ thread adds it
    }

    // dK (scaled) and dV (dropping: times 1 / (1 - p)) of this thread's keys into dqkv's k and v
    // slots. (The view's batch entry and head from the block's index again, not held through the
    // loop: ptxas -v, deterministic and dropping, 8 bytes spilled instead of 12.)
    const FlashBlock again = flash_key_block_at(blockIdx.x, order.key_blocks, bh_count, order.group_heads);
    const QkvView view = {(int64_t)a.batch * a.qkv_row,
                          (int64_t)(again.bh / a.heads) * a.qkv_row + (int64_t)(again.bh % a.heads) * 3 * D};
    write_dk_dv_rows<T>(static_cast<T *>(a.dqkv), view, dk, dv, j_first, seq, scale, keep_scale);
#else
    (void)q_map, (void)kv_map, (void)do_map, (void)dq_map, (void)a, (void)order, (void)scale;
    __trap();
#endif
}

// One instantiation of the kernel, its shared-memory limit set on first use.
template <typename T, int D, bool DETERMINISTIC, bool DROPOUT>
void launch_kernel(const BwdArgs &a, const KeyBlockOrder &order, const CUtensorMap &q_map, const CUtensorMap &kv_map,
                   const CUtensorMap &do_map, const CUtensorMap &dq_map) {
    constexpr size_t smem = SwapabTile<D>::SMEM;
    static bool configured = false;
    if (!configured) {
        CUDA_CHECK(cudaFuncSetAttribute(flash_backward_swapab_kernel<T, D, DETERMINISTIC, DROPOUT>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        configured = true;
    }
    const int blocks = order.key_blocks * a.batch * a.heads;
    flash_backward_swapab_kernel<T, D, DETERMINISTIC, DROPOUT>
        <<<blocks, SW_THREADS, smem>>>(q_map, kv_map, do_map, dq_map, a, order, 1.0f / sqrtf((float)D));
    CHECK_LAUNCH();
}

// The same for the warp-specialised kernel (head dim 128).
template <typename T, bool DETERMINISTIC, bool DROPOUT>
void launch_producer_kernel(const BwdArgs &a, const KeyBlockOrder &order, const CUtensorMap &q_map,
                            const CUtensorMap &kv_map, const CUtensorMap &do_map, const CUtensorMap &dq_map) {
    constexpr size_t smem = ProducerShape::SMEM;
    static bool configured = false;
    if (!configured) {
        CUDA_CHECK(cudaFuncSetAttribute(flash_backward_swapab_producer_kernel<T, DETERMINISTIC, DROPOUT>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        configured = true;
    }
    const int blocks = order.key_blocks * a.batch * a.heads;
    flash_backward_swapab_producer_kernel<T, DETERMINISTIC, DROPOUT><<<blocks, ProducerShape::THREADS, smem>>>(
        q_map, kv_map, do_map, dq_map, a, order, 1.0f / sqrtf((float)ProducerShape::D));
    CHECK_LAUNCH();
}

}  // namespace

size_t flash_backward_swapab_smem_bytes(int head_dim, int producer) {
    if (head_dim != 128) return SwapabTile<64>::SMEM;
    return producer ? ProducerShape::SMEM : SwapabTile<128>::SMEM;
}

int flash_backward_swapab_slice_keys(int producer) { return producer ? 64 : SW_BLOCK_N; }

template <typename T, int D>
void flash_backward_swapab(const BwdArgs &a, AttentionCausalOrder causal_order, int producer) {
    constexpr int BLOCK_M = SwapabTile<D>::BLOCK_M;
    const bool warp_specialised = D == 128 && producer;  // (ignored at head dim 64)
    if (!a.tile_stats) DIE("flash attention backward: the swapAB kernel needs the prepare pass's tile statistics");
    const int bh_count = a.batch * a.heads, key_blocks = ceil_div(a.seq, SW_BLOCK_N);
    if ((int64_t)key_blocks * bh_count > INT32_MAX)
        DIE("flash attention backward: %d key blocks x %d heads is more blocks than one launch takes", key_blocks,
            bh_count);
    const KeyBlockOrder order = flash_backward_key_order(a.seq, D, bh_count, SW_BLOCK_N, a.causal,
                                                         causal_order == ATTENTION_CAUSAL_HEAVY_FIRST);
    // The TMA sees qkv and dctx as [seq][batch][row] and copies boxes of 64 columns: 128 rows for
    // K and V, BLOCK_M for Q and dO (rows past seq read as zeros).
    const CUtensorMap q_map = tensor_map_rows<T>(a.qkv, a.qkv_row, a.batch, a.seq, BLOCK_M);
    const CUtensorMap kv_map = tensor_map_rows<T>(a.qkv, a.qkv_row, a.batch, a.seq, SW_BLOCK_N);
    const CUtensorMap do_map = tensor_map_rows<T>(a.dctx, a.ctx_row, a.batch, a.seq, BLOCK_M);
    // dQ's accumulator, [batch * heads][seq][D] floats (deterministic: one per slice of keys,
    // 128 or, warp-specialised, 64: [slices * batch * heads][seq][D]), takes boxes of 64 rows x
    // 32 floats.
    const int slice_keys = flash_backward_swapab_slice_keys(warp_specialised);
    const int64_t slices = a.deterministic ? ceil_div(a.seq, slice_keys) : 1;
    if (slices * bh_count > INT32_MAX)
        DIE("flash attention backward: %lld dQ slices x %d heads is more matrices than a tensor map takes",
            (long long)slices, bh_count);
    const CUtensorMap dq_map = tensor_map_float_rows(a.dq_accum, D, a.seq, (int)slices * bh_count, 64);
    const bool dropping = a.p_drop > 0.0f;
    if constexpr (D == 128) {
        if (warp_specialised) {
            if (a.deterministic && dropping)
                launch_producer_kernel<T, true, true>(a, order, q_map, kv_map, do_map, dq_map);
            else if (a.deterministic)
                launch_producer_kernel<T, true, false>(a, order, q_map, kv_map, do_map, dq_map);
            else if (dropping)
                launch_producer_kernel<T, false, true>(a, order, q_map, kv_map, do_map, dq_map);
            else
                launch_producer_kernel<T, false, false>(a, order, q_map, kv_map, do_map, dq_map);
            return;
        }
    }
    if (a.deterministic && dropping)
        launch_kernel<T, D, true, true>(a, order, q_map, kv_map, do_map, dq_map);
    else if (a.deterministic)
        launch_kernel<T, D, true, false>(a, order, q_map, kv_map, do_map, dq_map);
    else if (dropping)
        launch_kernel<T, D, false, true>(a, order, q_map, kv_map, do_map, dq_map);
    else
        launch_kernel<T, D, false, false>(a, order, q_map, kv_map, do_map, dq_map);
}

template void flash_backward_swapab<__half, 64>(const BwdArgs &, AttentionCausalOrder, int);
template void flash_backward_swapab<__half, 128>(const BwdArgs &, AttentionCausalOrder, int);
template void flash_backward_swapab<__nv_bfloat16, 64>(const BwdArgs &, AttentionCausalOrder, int);
template void flash_backward_swapab<__nv_bfloat16, 128>(const BwdArgs &, AttentionCausalOrder, int);
