// Flash attention backward on Hopper's warpgroup MMA (wgmma), head dims 128 and 64 (D): the
// same algorithm as the mma.sync backward in flash_mma.cu (FlashAttention-2's), with the five
// matrix products done by wgmmas reading their operands from 128-byte-swizzled shared memory
// (wgmma.cuh) instead of by warps loading fragments into registers.
//
// Block: 64 WGS keys of one head, WGS warpgroups (WGS = 2: 128 keys, every scheme below; WGS
// = 3: 192 keys, D = 64 OWN_KEYS only, not deterministic); warpgroup w owns keys [64 w, 64 w +
// 64) and keeps their dK and dV in registers while the block walks over the queries, 64 at a
// time. Why a third warpgroup at D = 64: with two, Nsight Compute (H200) found the kernel
// latency-bound - 2 warps per scheduler, 0.66 of them eligible, the tensor pipe under half
// busy - and each query tile's fixed costs (two __syncthreads, proxy fences, the row
// statistics, the Q and dO copies) paid for only 128 keys; three warpgroups give each
// scheduler 3 warps and spread those costs over 192 keys, at 168 registers per thread instead
// of 255 (launch bounds: 384 threads, one block per SM).
// K, V, Q and dO are D / 64 panels of 64 columns each. Per query tile, warpgroup w:
//   S  = Q K_w^T, dP = dO V_w^T        64 queries x 64 keys, Q, K, dO, V all K-major
//   P, dS in registers (as the mma.sync kernel), then stored to shared memory
//   dV_w += P_w^T dO, dK_w += dS_w^T Q   A read transposed (keys are P's contiguous dimension)
//   dQ, staged in shared memory and added into the float accumulator by the TMA unit (tensor
//   reductions of 64 rows x 32 floats); DETERMINISTIC: stored, by TMA stores, into a slice of
//   its own (BwdArgs), summed later in order. Three ways (DqScheme):
//     D = 128, COLUMN_HALVES: dQ[:, 64 w, + 64] = dS K over all 128 keys (both warpgroups'
//       dS); four reductions per tile; one slice per block (128 keys)
//     D = 64, OWN_KEYS (the default): dQ_w = dS_w K_w over the warpgroup's own 64 keys only
//       (splitting the 64 columns would take wgmmas of N = 32, half a swizzled panel); every
//       warpgroup's share is added, so no barrier between the warpgroups before dQ, but
//       WGS times the reductions per product (2 WGS per tile); one slice per warpgroup (64 keys)
//     D = 64, BY_TURNS: warpgroup step % 2 computes dQ = dS K over all 128 keys, the other
//       none (the tensor cores, shared, see the same work); two reductions per tile; one
//       slice per block
// Copies are TMA copies (hopper_pipeline.cuh): K and V once, by one thread; Q and dO of the
// query tile after next, by 2 D / 64 warps (a panel each), into the stage the block has just
// finished with (which warps: load_query_part's caller).
#include "common/gpu/cuda_check.h"
#include "kernels/attention/flash_common.cuh"
#include "kernels/attention/flash_kernels.cuh"
#include "kernels/attention/hopper_pipeline.cuh"
#include "kernels/attention/wgmma.cuh"
#include "kernels/device_utils.cuh"

namespace {

// Keys per block of WGS warpgroups: 128 (two; every head dim and scheme) or 192 (three; D =
// 64, OWN_KEYS, not deterministic).
constexpr int block_keys(int wgs) { return 64 * wgs; }
constexpr int BW_BLOCK_M = 64;   // queries per step

// Bytes of a 64-column panel of K or V (the block's 64 WGS rows)
constexpr int kv_panel(int wgs) { return block_keys(wgs) * 128; }
constexpr int QO_PANEL = BW_BLOCK_M * 128;  // ... of Q or dO (64 rows)
constexpr int PS_PANEL = BW_BLOCK_M * 128;  // ... of P or dS: 64 queries x one warpgroup's 64 keys
constexpr int ps_bytes(int wgs) { return wgs * PS_PANEL; }  // a panel per warpgroup
// K and V tiles, Q and dO tiles: D / 64 panels each.
template <int D, int WGS>
constexpr int kv_bytes() {
    return D / 64 * kv_panel(WGS);
}
template <int D>
constexpr int qo_bytes() {
    return D / 64 * QO_PANEL;
}
// How dQ of a query tile is computed (above).
enum DqScheme { COLUMN_HALVES, OWN_KEYS, BY_TURNS };
// Keys per dQ slice of the deterministic backward (two warpgroups): a warpgroup's (OWN_KEYS),
// else a block's.
constexpr int dq_slice_keys(DqScheme dq) { return dq == OWN_KEYS ? 64 : block_keys(2); }
// dQ of a query tile waits in shared memory and is added into the float accumulator by the TMA
// unit, instead of by 8-byte atomics from every thread - those took a fifth of the kernel's
// time (2.67 ms with them, 2.10 without, b4 h32 s2048 d128; FlashAttention-3 does the same).
// The staged tile is four panels of 32 columns, [64 rows][128 bytes] each, with the 128-byte
// swizzle (dq_stage_offset), added with four tensor reductions (tma_reduce_add_3d), one per
// warp of the second warpgroup (D = 64, OWN_KEYS: WGS dQ tiles of 64 columns, one per
// warpgroup, each added by two of its own warps: 2 WGS panels). (The version before staged plain rows and added each with a
// bulk copy issued by its own thread: 64 per tile, from two warps, which the compiler turns
// into a loop of 32 turns per warp - Nsight Compute found those two warps spending about a
// third of the kernel in it, their warpgroup late at every barrier and the other one waiting
// there.)
constexpr int DQ_PANEL = BW_BLOCK_M * 128;  // 64 rows x 32 floats
constexpr int dq_bytes(int wgs) { return 2 * wgs * DQ_PANEL; }  // 4 panels with two warpgroups, 6 with three
// K, V, two stages of Q and dO, P, dS, staged dQ, + room for the 1024-byte alignment:
// 193 KiB at D = 128, 129 KiB at D = 64; three warpgroups (D = 64): 177 KiB.
template <int D, int WGS>
constexpr size_t smem_bytes() {
    return 2 * kv_bytes<D, WGS>() + 4 * qo_bytes<D>() + 2 * ps_bytes(WGS) + dq_bytes(WGS) + 1024;
}
static_assert(smem_bytes<128, 2>() <= 227 * 1024 && smem_bytes<64, 2>() <= 227 * 1024 &&
                  smem_bytes<64, 3>() <= 227 * 1024,
              "Hopper's limit per block");

#if WGMMA_AVAILABLE  // only the kernel's body uses it, and that exists where wgmma does
// Byte offset of dQ's (row, col) in the staged tile. A warp's 8-byte stores of one step (8 rows
// x 4 column pairs) land in 16-byte chunks that the swizzle spreads over all 32 banks.
// (maybe_unused: the stub compiled for other GPUs than sm_90a does not use it.)
[[maybe_unused]] __device__ __forceinline__ uint32_t dq_stage_offset(int row, int col) {
    return (uint32_t)((col / 32) * DQ_PANEL) + swizzled_offset(row, (col % 32) / 4) + 4 * (col % 4);
}
#endif

#if WGMMA_AVAILABLE  // (the kernel's body alone uses it, as dq_stage_offset)
// A tile's dropout mask (TileDropout: rows g and g + 8, 4 words each) in 4 registers instead
// of 8, for the three-warpgroup kernel (DRAW_AHEAD, below): word w keeps row 0's flags in bit
// 7 of each byte, as RowDropout does, and row 1's in bit 6, which a shift by one brings to bit
// 7 (the byte permute that builds a mask reads bit 7 only). Two instructions per word to pack,
// one per word of row 1 to unpack.
struct PackedTileDropout {
    uint32_t flags[4];

    __device__ __forceinline__ uint32_t pair_mask(int r, int n) const {  // row r's keys 8n + 2c, + 1
        const uint32_t w = flags[n >> 1];
        return dropout_pair_mask(r ? w << 1 : w, 2 * (n & 1));
    }
};

__device__ __forceinline__ PackedTileDropout pack_tile_dropout(const TileDropout &d) {
    PackedTileDropout p;
#pragma unroll
    for (int w = 0; w < 4; w++)
        p.flags[w] = (d.row[0].flags[w] & 0x80808080u) | ((d.row[1].flags[w] >> 1) & 0x7f7f7f7fu);
    return p;
}
#endif

template <typename T, int D, DqScheme DQ, bool DETERMINISTIC, int WGS>
__global__ void __launch_bounds__(128 * WGS, 1)
    flash_backward_wgmma_kernel(const __grid_constant__ CUtensorMap q_map, const __grid_constant__ CUtensorMap kv_map,
                                const __grid_constant__ CUtensorMap do_map, const __grid_constant__ CUtensorMap dq_map,
                                const __grid_constant__ BwdArgs a,
                                float scale) {
#if WGMMA_AVAILABLE
    static_assert(D == 64 || D == 128, "head dims 64 and 128");
    static_assert((D == 128) == (DQ == COLUMN_HALVES), "column halves at D = 128, one of the others at 64");
    static_assert(WGS == 2 || (WGS == 3 && DQ == OWN_KEYS && !DETERMINISTIC),
                  "three warpgroups: D = 64, dQ over own keys, not deterministic");
    constexpr int PANELS = D / 64;  // 64-column panels of K, V, Q, dO
    constexpr int BLOCK_N = block_keys(WGS), KV_PANEL = kv_panel(WGS), PS_BYTES = ps_bytes(WGS);
    constexpr int KV_BYTES = kv_bytes<D, WGS>(), QO_BYTES = qo_bytes<D>();
    constexpr int QUERY_PARTS = 2 * PANELS;  // TMA copies of a query tile: Q's panels, dO's
    extern __shared__ unsigned char smem_raw[];
    unsigned char *k_tile = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
    unsigned char *v_tile = k_tile + KV_BYTES;
    unsigned char *q_tiles = v_tile + KV_BYTES;     // two buffers
    unsigned char *do_tiles = q_tiles + 2 * QO_BYTES;  // two buffers
    unsigned char *p_tile = do_tiles + 2 * QO_BYTES;   // dropped probabilities, [query][key]
    unsigned char *ds_tile = p_tile + PS_BYTES;        // dS, [query][key]
    unsigned char *dq_stage = ds_tile + PS_BYTES;      // dQ of a query tile, floats

    __shared__ uint64_t kv_full, qdo_full[2];  // mbarriers: K and V landed; a stage's Q and dO landed

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warpgroup = warp / 4, wq = warp % 4;
    const int g = lane / 4, c = lane % 4;
    const int bh = blockIdx.y, b = bh / a.heads, h = bh % a.heads, seq = a.seq;
    // Causal, block x walks the queries from k0 to seq: the lower x, the more query steps, so
    // each head's blocks already start heaviest first (the forward's concern, block_order.h).
    // Across heads the order stays head after head: not reordered here.
    const int k0 = blockIdx.x * BLOCK_N;
    const int key0 = k0 + 64 * warpgroup;  // this warpgroup's first key
    const float scale_log2 = scale * LOG2E;
    const bool dropping = a.p_drop > 0.0f;
    const uint32_t drop_threshold = dropout_threshold(a.p_drop);
    const float keep_scale = dropout_keep_scale(a.p_drop);
    const uint64_t drop_bh = a.drop.global_bh(b, h);
    const int m_start = a.causal ? (k0 / BW_BLOCK_M) * BW_BLOCK_M : 0;
    const int steps = (seq - m_start + BW_BLOCK_M - 1) / BW_BLOCK_M;

    // The copies are TMA copies (hopper_pipeline.cuh): K and V once, by thread 0; Q and dO of
    // query tile `step` into stage step % 2 as QUERY_PARTS parts (Q's 64-column panels, dO's),
    // each part arriving on the stage's mbarrier with its bytes. In the loop one warp issues
    // each part: a thread issuing a TMA instruction waits until the unit takes it, and the
    // wgmmas wait for all four warps of a warpgroup, so a warp that issued all four held up
    // its warpgroup (Nsight Compute, d 128: 8% of the kernel's stall samples at the first
    // wgmma of a tile). Two warpgroups: the first warpgroup's first QUERY_PARTS warps (the
    // second's warps 2 and 3 add dQ at D = 128, both's at D = 64). Three (D = 64, two parts):
    // warp 0 of two warpgroups, which two turning with the step (copy_part), so that no
    // warpgroup carries the copies on every tile next to its dQ reductions (warps 2 and 3 of
    // every warpgroup). Columns: head h's q, k, v at h * 3d, + d, + 2d in qkv; its dO at h * d.
    auto load_query_part = [&](int step, int part) {
        uint64_t *bar = &qdo_full[step % 2];
        const int row = m_start + step * BW_BLOCK_M, panel = part % PANELS;
        mbarrier_arrive_expect_tx(bar, QO_PANEL);
        if (part < PANELS)
            tma_load_3d(q_tiles + (step % 2) * QO_BYTES + panel * QO_PANEL, &q_map, h * 3 * D + 64 * panel, b, row,
                        bar);
        else
            tma_load_3d(do_tiles + (step % 2) * QO_BYTES + panel * QO_PANEL, &do_map, h * D + 64 * panel, b, row, bar);
    };
    auto load_query_tile = [&](int step) {
        for (int part = 0; part < QUERY_PARTS; part++) load_query_part(step, part);
    };
    if (threadIdx.x == 0) {
        mbarrier_init(&kv_full, 1), mbarrier_init(&qdo_full[0], QUERY_PARTS);
        mbarrier_init(&qdo_full[1], QUERY_PARTS);
        fence_shared_for_wgmma();  // the initialised barriers, for the TMA unit
        mbarrier_arrive_expect_tx(&kv_full, 2 * KV_BYTES);  // rows past seq arrive as zeros, bytes counted
        for (int panel = 0; panel < PANELS; panel++) {
            tma_load_3d(k_tile + panel * KV_PANEL, &kv_map, h * 3 * D + D + 64 * panel, b, k0, &kv_full);
            tma_load_3d(v_tile + panel * KV_PANEL, &kv_map, h * 3 * D + 2 * D + 64 * panel, b, k0, &kv_full);
        }
        load_query_tile(0);
        if (steps > 1) load_query_tile(1);
    }
    __syncthreads();  // the barriers are initialised

    // dK and dV of keys key0 + 16 wq + g (+ 8): wgmma accumulators of 64 keys x D columns.
    float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) dk[n][e] = dv[n][e] = 0.0f;

    const uint32_t k_addr = smem_addr(k_tile), v_addr = smem_addr(v_tile);
    const uint32_t p_addr = smem_addr(p_tile), ds_addr = smem_addr(ds_tile);
    // The staged dQ of query tile `step` (first query q0) into the accumulator; DETERMINISTIC:
    // stored into the slice of its keys, matrix slice * batch * heads + bh of dq_map's.
    // COLUMN_HALVES: warp wq of the second warpgroup adds panel wq (the first warpgroup's warps
    // issue the copies); slice blockIdx.x. OWN_KEYS: warps 2 and 3 of warpgroup w add its
    // panels 2w and 2w + 1 (warp 0, or 0 and 1, issue the copies); slice WGS blockIdx.x + w (= the
    // warpgroup's first key / 64). A warpgroup whose keys all lie past seq adds nothing (its
    // dS is zero) and has no slice: the workspace holds seq / 64 of them, rounded up. BY_TURNS: warps 2
    // and 3 of the warpgroup whose turn it was add panels 0 and 1; slice blockIdx.x.
    auto add_dq_tile = [&](int step, int q0) {
        if (lane != 0) return;
        int panel, slice;
        if constexpr (DQ == COLUMN_HALVES) {
            if (warpgroup != 1) return;
            panel = wq, slice = blockIdx.x;
        } else if constexpr (DQ == OWN_KEYS) {
            if (wq < 2 || key0 >= seq) return;
            panel = 2 * warpgroup + wq - 2, slice = WGS * blockIdx.x + warpgroup;
        } else {
            if (wq < 2 || warpgroup != step % 2) return;
            panel = wq - 2, slice = blockIdx.x;
        }
        const float *staged = reinterpret_cast<const float *>(dq_stage + panel * DQ_PANEL);
        const int col = 32 * (panel % (D / 32));
        if constexpr (DETERMINISTIC)
            tma_store_3d(&dq_map, col, q0, slice * gridDim.y + bh, staged);
        else
            tma_reduce_add_3d(&dq_map, col, q0, bh, staged);
    };
    // lse and Dsum of this thread's queries 16 wq + g (+ 8) of the tile starting at q0: loaded a
    // tile ahead (the loads' latency was in the way of the exponentials), at the end of the
    // tile before (below), and used only there (so that the thread does not wait for them
    // where it loads them).
    float lse_i[2], dsum_i[2];
    auto load_row_stats = [&](int q0) {
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const int i = q0 + 16 * wq + g + 8 * r;
            // Three warpgroups: a 32-bit index (the launch sees to batch * heads * seq < 2^32),
            // whose one register replaces two 64-bit row pointers (spilled otherwise).
            const int64_t at = WGS == 3 ? (int64_t)((uint32_t)bh * (uint32_t)seq + (uint32_t)i) : (int64_t)bh * seq + i;
            lse_i[r] = i < seq ? a.lse[at] : 0.0f;
            dsum_i[r] = i < seq ? a.dsum[at] : 0.0f;
        }
    };
    // The dropout mask of this thread's queries 16 wq + g (+ 8) of the tile starting at q0 and
    // keys 8n + 2c (+ 1) of the warpgroup's 64 (numbered by key block key0 / 64, whatever the
    // block's size). Two warpgroups: drawn while the tile's S and dP are computed and kept
    // until dS (8 registers). Three (DRAW_AHEAD): 168 registers each, too few for the Philox
    // rounds and the mask next to S, dP, dK and dV (ptxas spilled): drawn a tile ahead, at the
    // end of the tile before (where only dK and dV are live), packed into 4 registers
    // (PackedTileDropout), and folded into P's sign bits as P is stored, so that no mask
    // register lives on into the dS step.
    constexpr bool DRAW_AHEAD = WGS == 3;
    auto draw_dropout = [&](int q0) {
        const uint64_t row_group[2] = {dropout_row_group(drop_bh, q0 + 16 * wq + g, seq),
                                       dropout_row_group(drop_bh, q0 + 16 * wq + g + 8, seq)};
        return tile_dropout(row_group, key0 / 64, a.keys, a.offset, drop_threshold);
    };
    TileDropout dropped;
    PackedTileDropout dropped_ahead;
    load_row_stats(m_start);
    if (DRAW_AHEAD && dropping) dropped_ahead = pack_tile_dropout(draw_dropout(m_start));
    mbarrier_wait(&kv_full, 0);
    for (int step = 0; step < steps; step++) {
        const int q0 = m_start + step * BW_BLOCK_M;
        mbarrier_wait(&qdo_full[step % 2], (step / 2) & 1);
        const uint32_t q_addr = smem_addr(q_tiles + (step % 2) * QO_BYTES);
        const uint32_t do_addr = smem_addr(do_tiles + (step % 2) * QO_BYTES);

        // S = Q K_w^T and dP = dO V_w^T, two groups: step kk takes 16 of the D columns (panel
        // kk / 4); the warpgroup's keys start 64 rows (8192 bytes) into each panel of K and V.
        float s[8][4], dp[8][4];
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            const uint32_t qo = (kk / 4) * QO_PANEL + (kk % 4) * 32;
            const uint32_t kv = (kk / 4) * KV_PANEL + warpgroup * 64 * 128 + (kk % 4) * 32;
            wgmma_ss<T, 64>(s, wgmma_descriptor(q_addr + qo, 0, 1024), wgmma_descriptor(k_addr + kv, 0, 1024), kk > 0);
        }
        wgmma_commit();
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            const uint32_t qo = (kk / 4) * QO_PANEL + (kk % 4) * 32;
            const uint32_t kv = (kk / 4) * KV_PANEL + warpgroup * 64 * 128 + (kk % 4) * 32;
            wgmma_ss<T, 64>(dp, wgmma_descriptor(do_addr + qo, 0, 1024), wgmma_descriptor(v_addr + kv, 0, 1024),
                            kk > 0);
        }
        wgmma_commit();

        // While the tensor cores work: the dropout mask (two warpgroups; above).
        if (!DRAW_AHEAD && dropping) dropped = draw_dropout(q0);

        // P = exp(S scale - lse) (kept in s) and Pd = P * mask (the factor 1 / (1 - p) is applied
        // to dV at the end), stored as 16-bit pairs into the warpgroup's panel of the P tile
        // (while dP is still being computed). Masked scores become -inf (exp: 0); only tiles at
        // the edges or, when causal, on the diagonal need it. DRAW_AHEAD: a dropped P is kept in
        // s negated (P >= 0, so its sign bit is free; -0.0 for P = 0), its drop read back for dS.
        wgmma_wait<1>();
        wgmma_settle(s);
        const int i_first = q0 + 16 * wq + g;  // this thread's rows: i_first and i_first + 8
        if (i_first + 8 >= seq || key0 + 64 > seq || (a.causal && key0 + 63 > i_first)) {
#pragma unroll
            for (int r = 0; r < 2; r++) {
                const int i = i_first + 8 * r;
                if constexpr (WGS == 3) {
                    // Query i sees keys j < limit: none past seq, when causal none past i, none
                    // at all if i lies past seq; so this thread's key 8n + e (+ key0 + 2c) iff
                    // 8n + e < seen - one compare with a constant per score (the three tests per
                    // score below made ptxas spill a dozen registers with three warpgroups).
                    const int limit = i >= seq ? 0 : a.causal ? min(i + 1, seq) : seq;
                    const int seen = limit - key0 - 2 * c;
#pragma unroll
                    for (int n = 0; n < 8; n++)
#pragma unroll
                        for (int e = 0; e < 2; e++)
                            if (8 * n + e >= seen) s[n][2 * r + e] = -INFINITY;
                } else {
#pragma unroll
                    for (int n = 0; n < 8; n++)
#pragma unroll
                        for (int e = 0; e < 2; e++) {
                            const int j = key0 + 8 * n + 2 * c + e;
                            if (i >= seq || j >= seq || (a.causal && j > i)) s[n][2 * r + e] = -INFINITY;
                        }
                }
            }
        }
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const int il = 16 * wq + g + 8 * r;
            const float lse_log2 = lse_i[r] * LOG2E;
#pragma unroll
            for (int n = 0; n < 8; n++) {
#pragma unroll
                for (int e = 0; e < 2; e++) s[n][2 * r + e] = exp2_approx(fmaf(s[n][2 * r + e], scale_log2, -lse_log2));
                uint32_t pd = pack2<T>(s[n][2 * r], s[n][2 * r + 1]);
                if (dropping) {
                    const uint32_t keep = DRAW_AHEAD ? dropped_ahead.pair_mask(r, n)
                                                     : dropped.row[r].pair_mask(n);  // 16 bits each, low: e = 0
                    pd &= keep;
                    if constexpr (DRAW_AHEAD) {
                        s[n][2 * r] = __uint_as_float(__float_as_uint(s[n][2 * r]) | (~(keep << 16) & 0x80000000u));
                        s[n][2 * r + 1] = __uint_as_float(__float_as_uint(s[n][2 * r + 1]) | (~keep & 0x80000000u));
                    }
                }
                *reinterpret_cast<uint32_t *>(p_tile + warpgroup * PS_PANEL + swizzled_offset(il, n) + 4 * c) = pd;
            }
        }
        fence_shared_for_wgmma();
        warpgroup_barrier(warpgroup);  // the warpgroup's P panel is complete

        // dV_w += Pd_w^T dO: A = the warpgroup's panel read transposed (keys are its contiguous
        // dimension), B = dO read transposed (its columns are the output's); step kk takes 16
        // queries, 16 rows (2048 bytes) further. It runs while dS is computed.
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < BW_BLOCK_M / 16; kk++)
            wgmma_ss<T, D, 1, 1>(dv, wgmma_descriptor(p_addr + warpgroup * PS_PANEL + kk * 2048, PS_PANEL, 1024),
                                 wgmma_descriptor(do_addr + kk * 2048, QO_PANEL, 1024));
        wgmma_commit();

        // dS = P * (dP - Dsum) with dP = dPd * mask / (1 - p), into the dS tile. DRAW_AHEAD: P =
        // |s|, dropped where s is negative (bit for bit the same dS).
        wgmma_wait<1>();
        wgmma_settle(dp);
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const int il = 16 * wq + g + 8 * r;
#pragma unroll
            for (int n = 0; n < 8; n++) {
                float dpd[2], p[2];
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const float sv = s[n][2 * r + e], dpv = dp[n][2 * r + e];
                    if constexpr (DRAW_AHEAD) {
                        p[e] = fabsf(sv);
                        dpd[e] = dropping ? (__float_as_int(sv) < 0 ? 0.0f : dpv * keep_scale) : dpv;
                    } else {
                        p[e] = sv;
                        dpd[e] = dropping ? masked(dpv, dropped.row[r].element_mask(n, e)) * keep_scale : dpv;
                    }
                }
                *reinterpret_cast<uint32_t *>(ds_tile + warpgroup * PS_PANEL + swizzled_offset(il, n) + 4 * c) =
                    pack2<T>(p[0] * (dpd[0] - dsum_i[r]), p[1] * (dpd[1] - dsum_i[r]));
            }
        }
        bulk_wait_read();  // (the threads that added dQ) the staging buffer is free again
        fence_shared_for_wgmma();
        if constexpr (DQ == OWN_KEYS)
            warpgroup_barrier(warpgroup);  // the warpgroup's dS panel is complete (its dQ needs no other)
        else
            __syncthreads();  // dQ needs both warpgroups' dS

        // dK_w += dS_w^T Q, as dV. dQ: A = dS, keys contiguous (panel kk / 4); B = K read
        // transposed, 16 keys (2048 bytes) per step. COLUMN_HALVES: dQ[:, 64 w, + 64] = dS K,
        // over both warpgroups' dS panels and K's panel w. OWN_KEYS: dQ_w = dS_w K_w, the
        // warpgroup's own dS panel and its 64 rows of K. BY_TURNS: dQ = dS K, both dS panels,
        // by the warpgroup whose turn it is.
        const bool computes_dq = DQ != BY_TURNS || warpgroup == step % 2;  // the same for a whole warpgroup
        float dq[8][4];
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < BW_BLOCK_M / 16; kk++)
            wgmma_ss<T, D, 1, 1>(dk, wgmma_descriptor(ds_addr + warpgroup * PS_PANEL + kk * 2048, PS_PANEL, 1024),
                                 wgmma_descriptor(q_addr + kk * 2048, QO_PANEL, 1024));
        if constexpr (DQ == OWN_KEYS) {
#pragma unroll
            for (int kk = 0; kk < 64 / 16; kk++)
                wgmma_ss<T, 64, 0, 1>(dq, wgmma_descriptor(ds_addr + warpgroup * PS_PANEL + kk * 32, 0, 1024),
                                      wgmma_descriptor(k_addr + warpgroup * 64 * 128 + kk * 2048, KV_PANEL, 1024),
                                      kk > 0);
        } else if (computes_dq) {
            const uint32_t k_panel = DQ == COLUMN_HALVES ? warpgroup * KV_PANEL : 0;
#pragma unroll
            for (int kk = 0; kk < BLOCK_N / 16; kk++)
                wgmma_ss<T, 64, 0, 1>(dq, wgmma_descriptor(ds_addr + (kk / 4) * PS_PANEL + (kk % 4) * 32, 0, 1024),
                                      wgmma_descriptor(k_addr + k_panel + kk * 2048, KV_PANEL, 1024), kk > 0);
        }
        wgmma_commit();
        wgmma_wait<0>();
        wgmma_settle(dv);
        wgmma_settle(dk);
        wgmma_settle(dq);

        // Staged at columns 64 w + c (panel 2 w + c / 32: COLUMN_HALVES, columns 64 w + c of dQ;
        // OWN_KEYS, column c of the warpgroup's share) or, BY_TURNS, c (panels 0 and 1).
        if (computes_dq) {
            const int col0 = DQ == BY_TURNS ? 0 : 64 * warpgroup;
#pragma unroll
            for (int r = 0; r < 2; r++)
#pragma unroll
                for (int n = 0; n < 8; n++)
                    *reinterpret_cast<float2 *>(dq_stage +
                                                dq_stage_offset(16 * wq + g + 8 * r, col0 + 8 * n + 2 * c)) =
                        make_float2(dq[n][2 * r] * scale, dq[n][2 * r + 1] * scale);
        }
        fence_shared_for_wgmma();  // the staged dQ, for the TMA unit
        __syncthreads();           // all warpgroups are done with this tile (its Q and dO stage is free); dQ is staged
        add_dq_tile(step, q0);     // it is added while the next tile runs
        if (lane == 0 && step + 2 < steps) {  // the stage just freed
            if constexpr (WGS == 2) {
                if (warpgroup == 0 && wq < QUERY_PARTS) load_query_part(step + 2, wq);
            } else {
                // Part (warpgroup - step) mod 3, if 0 (Q) or 1 (dO): warpgroups step % 3 and
                // step % 3 + 1 (mod 3) this time, the third next time.
                const int copy_part = (warpgroup + 3 - step % 3) % 3;
                if (wq == 0 && copy_part < QUERY_PARTS) load_query_part(step + 2, copy_part);
            }
        }
        // The next tile's lse and Dsum (dS was their last use in this one), loaded here, after
        // the tile's last fence: a proxy fence waits for the thread's loads still in flight, so
        // loads issued before the fences above held each of them up by their whole latency
        // (Nsight Compute, H200: the two fences and barriers of the tile were its most-sampled
        // instructions, waiting on the long scoreboard). From here they have the next tile's
        // S and dP products to land.
        if (step + 1 < steps) {
            load_row_stats(q0 + BW_BLOCK_M);
            if (DRAW_AHEAD && dropping) dropped_ahead = pack_tile_dropout(draw_dropout(q0 + BW_BLOCK_M));
        }
    }
    bulk_wait_all();  // before the block's shared memory goes away

    // dK (scaled) and dV of this thread's keys into dqkv's k and v slots. (Where a head's
    // vectors lie is worked out only here: worked out at the start, it made ptxas spill 44
    // bytes with three warpgroups.)
    const QkvView view = {(int64_t)a.batch * a.qkv_row, (int64_t)b * a.qkv_row + (int64_t)h * 3 * D};
    write_dk_dv_rows<T>(static_cast<T *>(a.dqkv), view, dk, dv, key0 + 16 * wq + g, seq, scale, keep_scale);
#else
    (void)q_map, (void)kv_map, (void)do_map, (void)dq_map, (void)a, (void)scale;
    __trap();
#endif
}

// One instantiation of the kernel, its shared-memory limit set on first use; a block of
// block_keys(WGS) keys per grid column.
template <typename T, int D, DqScheme DQ, bool DETERMINISTIC, int WGS = 2>
void launch_kernel(const BwdArgs &a, const CUtensorMap &q_map, const CUtensorMap &kv_map, const CUtensorMap &do_map,
                   const CUtensorMap &dq_map) {
    constexpr size_t smem = smem_bytes<D, WGS>();
    static bool configured = false;
    if (!configured) {
        CUDA_CHECK(cudaFuncSetAttribute(flash_backward_wgmma_kernel<T, D, DQ, DETERMINISTIC, WGS>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        configured = true;
    }
    const dim3 grid(ceil_div(a.seq, block_keys(WGS)), a.batch * a.heads);
    flash_backward_wgmma_kernel<T, D, DQ, DETERMINISTIC, WGS>
        <<<grid, 128 * WGS, smem>>>(q_map, kv_map, do_map, dq_map, a, 1.0f / sqrtf((float)D));
    CHECK_LAUNCH();
}

}  // namespace

// Three warpgroups only at D = 64 (anything else: the two-warpgroup kernel's bytes).
size_t flash_backward_wgmma_smem_bytes(int head_dim, int warpgroups) {
    if (head_dim == 128) return smem_bytes<128, 2>();
    return warpgroups == 3 ? smem_bytes<64, 3>() : smem_bytes<64, 2>();
}

// The kernel's way of computing dQ: at D = 128 its only one, at D = 64 the caller's choice.
static DqScheme dq_scheme(int head_dim, FlashDq64 dq64) {
    return head_dim == 128 ? COLUMN_HALVES : dq64 == FLASH_DQ64_BY_TURNS ? BY_TURNS : OWN_KEYS;
}

int flash_backward_wgmma_slice_keys(int head_dim, FlashDq64 dq64) { return dq_slice_keys(dq_scheme(head_dim, dq64)); }

template <typename T, int D>
void flash_backward_wgmma(const BwdArgs &a, FlashDq64 dq64) {
    const DqScheme dq = dq_scheme(D, dq64);
    // Three warpgroups: D = 64 and not deterministic only; deterministic, FLASH_DQ64_OWN_KEYS_WG3
    // runs the two-warpgroup OWN_KEYS kernel (the same 64-key slices).
    // (And its 32-bit query index: batch * heads * seq below 2^32, else two warpgroups too.)
    const bool three = D == 64 && dq64 == FLASH_DQ64_OWN_KEYS_WG3 && !a.deterministic &&
                       (int64_t)a.batch * a.heads * a.seq <= (int64_t)UINT32_MAX;
    // The TMA sees qkv and dctx as [seq][batch][row] and copies boxes of 64 columns: a block's
    // rows for K and V (128, or 192 with three warpgroups; rows past seq arrive as zeros), 64
    // for Q and dO.
    const CUtensorMap q_map = tensor_map_rows<T>(a.qkv, a.qkv_row, a.batch, a.seq, BW_BLOCK_M);
    const CUtensorMap kv_map = tensor_map_rows<T>(a.qkv, a.qkv_row, a.batch, a.seq, block_keys(three ? 3 : 2));
    const CUtensorMap do_map = tensor_map_rows<T>(a.dctx, a.ctx_row, a.batch, a.seq, BW_BLOCK_M);
    // dQ's accumulator, [batch * heads][seq][D] floats (deterministic: one per slice of
    // dq_slice_keys keys, [slices * batch * heads][seq][D]), takes boxes of 64 rows x 32 floats.
    const int slices = a.deterministic ? (int)ceil_div(a.seq, dq_slice_keys(dq)) : 1;
    const CUtensorMap dq_map = tensor_map_float_rows(a.dq_accum, D, a.seq, slices * a.batch * a.heads, BW_BLOCK_M);
    if constexpr (D == 128) {
        if (a.deterministic)
            launch_kernel<T, D, COLUMN_HALVES, true>(a, q_map, kv_map, do_map, dq_map);
        else
            launch_kernel<T, D, COLUMN_HALVES, false>(a, q_map, kv_map, do_map, dq_map);
    } else if (three) {
        launch_kernel<T, D, OWN_KEYS, false, 3>(a, q_map, kv_map, do_map, dq_map);
    } else if (dq == BY_TURNS) {
        if (a.deterministic)
            launch_kernel<T, D, BY_TURNS, true>(a, q_map, kv_map, do_map, dq_map);
        else
            launch_kernel<T, D, BY_TURNS, false>(a, q_map, kv_map, do_map, dq_map);
    } else {
        if (a.deterministic)
            launch_kernel<T, D, OWN_KEYS, true>(a, q_map, kv_map, do_map, dq_map);
        else
            launch_kernel<T, D, OWN_KEYS, false>(a, q_map, kv_map, do_map, dq_map);
    }
}

template void flash_backward_wgmma<__half, 64>(const BwdArgs &, FlashDq64);
template void flash_backward_wgmma<__half, 128>(const BwdArgs &, FlashDq64);
template void flash_backward_wgmma<__nv_bfloat16, 64>(const BwdArgs &, FlashDq64);
template void flash_backward_wgmma<__nv_bfloat16, 128>(const BwdArgs &, FlashDq64);
