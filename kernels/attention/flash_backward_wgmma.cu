// Flash attention backward on Hopper's warpgroup MMA (wgmma), head dims 128 and 64 (D): the
// same algorithm as the mma.sync backward in flash_mma.cu (FlashAttention-2's), with the five
// matrix products done by wgmmas reading their operands from 128-byte-swizzled shared memory
// (wgmma.cuh) instead of by warps loading fragments into registers.
//
// Block: 128 keys of one head, two warpgroups; warpgroup w owns keys [64 w, 64 w + 64) and
// keeps their dK and dV in registers while the block walks over the queries, 64 at a time.
// K, V, Q and dO are D / 64 panels of 64 columns each. Per query tile, warpgroup w:
//   S  = Q K_w^T, dP = dO V_w^T        64 queries x 64 keys, Q, K, dO, V all K-major
//   P, dS in registers (as the mma.sync kernel), then stored to shared memory
//   dV_w += P_w^T dO, dK_w += dS_w^T Q   A read transposed (keys are P's contiguous dimension)
//   dQ, staged in shared memory and added into the float accumulator by the TMA unit (tensor
//   reductions of 64 rows x 32 floats); DETERMINISTIC: stored, by TMA stores, into a slice of
//   its own (BwdArgs), summed later in order. Three ways (DqScheme):
//     D = 128, COLUMN_HALVES: dQ[:, 64 w, + 64] = dS K over all 128 keys (both warpgroups'
//       dS); four reductions per tile; one slice per block (128 keys)
//     D = 64, OWN_KEYS (the default when not deterministic): dQ_w = dS_w K_w over the
//       warpgroup's own 64 keys only (splitting the 64 columns would take wgmmas of N = 32,
//       half a swizzled panel); both warpgroups' shares are added, so no barrier between the
//       warpgroups before dQ, but twice the reductions per product (four per tile); one slice
//       per warpgroup (64 keys)
//     D = 64, BY_TURNS (the deterministic default): warpgroup step % 2 computes dQ = dS K over
//       all 128 keys, the other none (the tensor cores, shared, see the same work); two
//       reductions per tile; one slice per block
// Copies are TMA copies (hopper_pipeline.cuh): K and V once, by one thread; Q and dO of the
// query tile after next, by 2 D / 64 warps (a panel each), into the stage the block has just
// finished with.
#include "common/gpu/cuda_check.h"
#include "kernels/attention/block_order.h"
#include "kernels/attention/flash_backward_common.cuh"
#include "kernels/attention/flash_common.cuh"
#include "kernels/attention/flash_kernels.cuh"
#include "kernels/attention/hopper_pipeline.cuh"
#include "kernels/attention/wgmma.cuh"
#include "kernels/device_utils.cuh"

namespace {

constexpr int BW_BLOCK_N = 128;  // keys per block
constexpr int BW_BLOCK_M = 64;   // queries per step
constexpr int BW_THREADS = 256;  // two warpgroups

constexpr int KV_PANEL = BW_BLOCK_N * 128;  // bytes of a 64-column panel of K or V (128 rows)
constexpr int QO_PANEL = BW_BLOCK_M * 128;  // ... of Q or dO (64 rows)
constexpr int PS_PANEL = BW_BLOCK_M * 128;  // ... of P or dS: 64 queries x one warpgroup's 64 keys
constexpr int PS_BYTES = 2 * PS_PANEL;
// K and V tiles, Q and dO tiles: D / 64 panels each.
template <int D>
constexpr int kv_bytes() {
    return D / 64 * KV_PANEL;
}
template <int D>
constexpr int qo_bytes() {
    return D / 64 * QO_PANEL;
}
// How dQ of a query tile is computed (above).
enum DqScheme { COLUMN_HALVES, OWN_KEYS, BY_TURNS };
// Keys per dQ slice of the deterministic backward: a warpgroup's (OWN_KEYS), else a block's.
constexpr int dq_slice_keys(DqScheme dq) { return dq == OWN_KEYS ? BW_BLOCK_N / 2 : BW_BLOCK_N; }
// dQ of a query tile waits in shared memory and is added into the float accumulator by the TMA
// unit, instead of by 8-byte atomics from every thread - those took a fifth of the kernel's
// time (2.67 ms with them, 2.10 without, b4 h32 s2048 d128; FlashAttention-3 does the same).
// The staged tile is four panels of 32 columns, [64 rows][128 bytes] each, with the 128-byte
// swizzle (dq_stage_offset), added with four tensor reductions (tma_reduce_add_3d), one per
// warp of the second warpgroup (D = 64: two dQ tiles of 64 columns, one per warpgroup, each
// added by two of its own warps). (The version before staged plain rows and added each with a
// bulk copy issued by its own thread: 64 per tile, from two warps, which the compiler turns
// into a loop of 32 turns per warp - Nsight Compute found those two warps spending about a
// third of the kernel in it, their warpgroup late at every barrier and the other one waiting
// there.)
constexpr int DQ_PANEL = DQ_STAGE_PANEL;  // 64 rows x 32 floats (wgmma.cuh)
constexpr int DQ_BYTES = 4 * DQ_PANEL;
// K, V, two stages of Q and dO, P, dS, staged dQ, + room for the 1024-byte alignment:
// 193 KiB at D = 128, 129 KiB at D = 64.
template <int D>
constexpr size_t smem_bytes() {
    return 2 * kv_bytes<D>() + 4 * qo_bytes<D>() + 2 * PS_BYTES + DQ_BYTES + 1024;
}
static_assert(smem_bytes<128>() <= 227 * 1024 && smem_bytes<64>() <= 227 * 1024, "Hopper's limit per block");

template <typename T, int D, DqScheme DQ, bool DETERMINISTIC>
__global__ void __launch_bounds__(BW_THREADS, 1)
    flash_backward_wgmma_kernel(const __grid_constant__ CUtensorMap q_map, const __grid_constant__ CUtensorMap kv_map,
                                const __grid_constant__ CUtensorMap do_map, const __grid_constant__ CUtensorMap dq_map,
                                const __grid_constant__ BwdArgs a, const KeyBlockOrder order,
                                float scale) {
#if WGMMA_AVAILABLE
    static_assert(D == 64 || D == 128, "head dims 64 and 128");
    static_assert((D == 128) == (DQ == COLUMN_HALVES), "column halves at D = 128, one of the others at 64");
    constexpr int PANELS = D / 64;  // 64-column panels of K, V, Q, dO
    constexpr int KV_BYTES = kv_bytes<D>(), QO_BYTES = qo_bytes<D>();
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
    const int bh_count = a.batch * a.heads;
    const FlashBlock blk = flash_key_block_at(blockIdx.x, order.key_blocks, bh_count, order.group_heads);
    const int key_block = blk.query_block, bh = blk.bh, b = bh / a.heads, h = bh % a.heads, seq = a.seq;
    // Causal, block x walks the queries from k0 to seq: the lower x, the more query steps, so
    // each head's blocks already start heaviest first (the forward's concern, block_order.h).
    // Across heads the order stays head after head: not reordered here.
    const int k0 = key_block * BW_BLOCK_N;
    const int key0 = k0 + 64 * warpgroup;  // this warpgroup's first key
    const QkvView view = {(int64_t)a.batch * a.qkv_row, (int64_t)b * a.qkv_row + (int64_t)h * 3 * D};
    const float scale_log2 = scale * LOG2E;
    const bool dropping = a.p_drop > 0.0f;
    const uint32_t drop_threshold = dropout_threshold(a.p_drop);
    const float keep_scale = dropout_keep_scale(a.p_drop);
    const uint64_t drop_bh = a.drop.global_bh(b, h);
    const int m_start = a.causal ? (k0 / BW_BLOCK_M) * BW_BLOCK_M : 0;
    const int steps = (seq - m_start + BW_BLOCK_M - 1) / BW_BLOCK_M;

    // The copies are TMA copies (hopper_pipeline.cuh): K and V once, by thread 0; Q and dO of
    // query tile `step` into stage step % 2 as QUERY_PARTS parts (Q's 64-column panels, dO's),
    // each part arriving on the stage's mbarrier with its bytes. In the loop the first
    // warpgroup's first QUERY_PARTS warps issue one part each: a thread issuing a TMA
    // instruction waits until the unit takes it, and the wgmmas wait for all four warps of a
    // warpgroup, so a warp that issued all four held up its warpgroup (Nsight Compute, d 128:
    // 8% of the kernel's stall samples at the first wgmma of a tile). Columns: head h's q, k, v
    // at h * 3d, + d, + 2d in qkv; its dO at h * d.
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
        load_key_value_tiles<D>(k_tile, v_tile, &kv_map, &kv_full, h, b, k0, KV_PANEL);
        load_query_tile(0);
        if (steps > 1) load_query_tile(1);
    }
    __syncthreads();  // the barriers are initialised

    // dK and dV of keys key0 + 16 wq + g (+ 8): wgmma accumulators of 64 keys x D columns.
    float dk[D / 8][4], dv[D / 8][4];
    zero_key_accumulators(dk, dv);

    const uint32_t k_addr = smem_addr(k_tile), v_addr = smem_addr(v_tile);
    const uint32_t p_addr = smem_addr(p_tile), ds_addr = smem_addr(ds_tile);
    // The staged dQ of query tile `step` (first query q0) into the accumulator; DETERMINISTIC:
    // stored into the slice of its keys, matrix slice * batch * heads + bh of dq_map's.
    // COLUMN_HALVES: warp wq of the second warpgroup adds panel wq (the first warpgroup's warps
    // issue the copies); slice key_block. OWN_KEYS: warps 2 and 3 of warpgroup w add its
    // panels 2w and 2w + 1 (warps 0 and 1 of the first warpgroup issue the copies); slice 2
    // key_block + w. A warpgroup whose keys all lie past seq adds nothing (its dS is zero)
    // and has no slice: the workspace holds seq / 64 of them, rounded up. BY_TURNS: warps 2
    // and 3 of the warpgroup whose turn it was add panels 0 and 1; slice key_block.
    auto add_dq_tile = [&](int step, int q0) {
        if (lane != 0) return;
        int panel, slice;
        if constexpr (DQ == COLUMN_HALVES) {
            if (warpgroup != 1) return;
            panel = wq, slice = key_block;
        } else if constexpr (DQ == OWN_KEYS) {
            if (wq < 2 || key0 >= seq) return;
            panel = 2 * warpgroup + wq - 2, slice = 2 * key_block + warpgroup;
        } else {
            if (wq < 2 || warpgroup != step % 2) return;
            panel = wq - 2, slice = key_block;
        }
        const float *staged = reinterpret_cast<const float *>(dq_stage + panel * DQ_PANEL);
        const int col = 32 * (panel % (D / 32));
        if constexpr (DETERMINISTIC)
            tma_store_3d(&dq_map, col, q0, slice * bh_count + bh, staged);
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
            lse_i[r] = i < seq ? a.lse[(int64_t)bh * seq + i] : 0.0f;
            dsum_i[r] = i < seq ? a.dsum[(int64_t)bh * seq + i] : 0.0f;
        }
    };
    load_row_stats(m_start);
    mbarrier_wait(&kv_full, 0);
    for (int step = 0; step < steps; step++) {
        const int q0 = m_start + step * BW_BLOCK_M;
        mbarrier_wait(&qdo_full[step % 2], (step / 2) & 1);
        const uint32_t q_addr = smem_addr(q_tiles + (step % 2) * QO_BYTES);
        const uint32_t do_addr = smem_addr(do_tiles + (step % 2) * QO_BYTES);

        // S = Q K_w^T and dP = dO V_w^T, two groups: step kk takes 16 of the D columns (panel
        // kk / 4); the warpgroup's keys start 64 rows (8192 bytes) into each panel of K and V.
        float s[8][4], dp[8][4];
        wgmma_backward_scores<T, D>(s, dp, q_addr, do_addr, k_addr, v_addr, warpgroup * 64 * 128, QO_PANEL, KV_PANEL);

        // While the tensor cores work: the dropout mask of this thread's queries 16 wq + g (+ 8)
        // and keys 8n + 2c (+ 1) of the warpgroup's 64.
        TileDropout dropped;
        if (dropping)
            dropped = query_rows_dropout(drop_bh, q0 + 16 * wq + g, seq, key0 / 64, a.keys, a.offset, drop_threshold);

        // P = exp(S scale - lse) (kept in s) and Pd = P * mask (the factor 1 / (1 - p) is applied
        // to dV at the end), stored as 16-bit pairs into the warpgroup's panel of the P tile
        // (while dP is still being computed). Masked scores become -inf (exp: 0); only tiles at
        // the edges or, when causal, on the diagonal need it.
        wgmma_wait<1>();
        wgmma_settle(s);
        const int i_first = q0 + 16 * wq + g;  // this thread's rows: i_first and i_first + 8
        if (i_first + 8 >= seq || key0 + 64 > seq || (a.causal && key0 + 63 > i_first)) {
#pragma unroll
            for (int r = 0; r < 2; r++)
#pragma unroll
                for (int n = 0; n < 8; n++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        const int i = i_first + 8 * r, j = key0 + 8 * n + 2 * c + e;
                        if (i >= seq || j >= seq || (a.causal && j > i)) s[n][2 * r + e] = -INFINITY;
                    }
        }
        store_probabilities<T>(s, [&](int r, int) { return lse_i[r] * LOG2E; }, scale_log2, dropping, dropped,
                               p_tile + warpgroup * PS_PANEL, 16 * wq + g, c);
        fence_shared_for_wgmma();
        warpgroup_barrier(warpgroup);  // the warpgroup's P panel is complete

        // dV_w += Pd_w^T dO: A = the warpgroup's panel read transposed (keys are its contiguous
        // dimension), B = dO read transposed (its columns are the output's); step kk takes 16
        // queries, 16 rows (2048 bytes) further. It runs while dS is computed.
        wgmma_fence();
        wgmma_backward_key_update<T, D>(dv, p_addr + warpgroup * PS_PANEL, PS_PANEL, do_addr, QO_PANEL);
        wgmma_commit();

        // dS = P * (dP - Dsum) with dP = dPd * mask / (1 - p), into the dS tile.
        wgmma_wait<1>();
        wgmma_settle(dp);
        store_score_gradients<T>(ds_tile + warpgroup * PS_PANEL, s, dp, [&](int r, int) { return dsum_i[r]; }, dropping,
                                 dropped, keep_scale, 16 * wq + g, c);
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
        // BY_TURNS, the warpgroup whose turn it is not issues dK's product alone. Each path is
        // a whole group, fence to commit: with the branch inside one group (dQ's products issued
        // or not after dK's) ptxas serialised every wgmma of the BY_TURNS kernels (its warning
        // C7520).
        const bool computes_dq = DQ != BY_TURNS || warpgroup == step % 2;  // the same for a whole warpgroup
        float dq[8][4];
        if (!computes_dq) {
            wgmma_fence();
            wgmma_backward_key_update<T, D>(dk, ds_addr + warpgroup * PS_PANEL, PS_PANEL, q_addr, QO_PANEL);
            wgmma_commit();
        } else {
            wgmma_fence();
            wgmma_backward_key_update<T, D>(dk, ds_addr + warpgroup * PS_PANEL, PS_PANEL, q_addr, QO_PANEL);
            if constexpr (DQ == OWN_KEYS) {
#pragma unroll
                for (int kk = 0; kk < 64 / 16; kk++)
                    wgmma_ss<T, 64, 0, 1>(dq, wgmma_descriptor(ds_addr + warpgroup * PS_PANEL + kk * 32, 0, 1024),
                                          wgmma_descriptor(k_addr + warpgroup * 64 * 128 + kk * 2048, KV_PANEL, 1024),
                                          kk > 0);
            } else {
                const uint32_t k_panel = DQ == COLUMN_HALVES ? warpgroup * KV_PANEL : 0;
#pragma unroll
                for (int kk = 0; kk < BW_BLOCK_N / 16; kk++)
                    wgmma_ss<T, 64, 0, 1>(dq,
                                          wgmma_descriptor(ds_addr + (kk / 4) * PS_PANEL + (kk % 4) * 32, 0, 1024),
                                          wgmma_descriptor(k_addr + k_panel + kk * 2048, KV_PANEL, 1024), kk > 0);
            }
            wgmma_commit();
        }
        wgmma_wait<0>();
        wgmma_settle(dv);
        wgmma_settle(dk);
        wgmma_settle(dq);

        // Staged at columns 64 w + c (panel 2 w + c / 32: COLUMN_HALVES, columns 64 w + c of dQ;
        // OWN_KEYS, column c of the warpgroup's share) or, BY_TURNS, c (panels 0 and 1).
        // At D = 128 the threads of odd g store their column blocks in the order n ^ 2: a
        // warp's 8-byte stores go out 16 lanes (rows g = 0..3, or 4..7) at a time, and in the
        // same order the swizzle would send two of those lanes to the same bank (the XOR with
        // g spans only two bits of the chunk there); Nsight Compute counted every store twice.
        // (At D = 64, whose kernel is bound by its integer work, the selects this takes cost
        // more than the conflicts: 268-271 against 274-275 TFLOP/s, H200, same call.)
        if (computes_dq) {
            const int col0 = DQ == BY_TURNS ? 0 : 64 * warpgroup;
            stage_dq_rows(dq_stage, dq, 16 * wq + g, col0, D == 128 && (g & 1), scale, c);
        }
        fence_shared_for_wgmma();  // the staged dQ, for the TMA unit
        __syncthreads();           // both warpgroups are done with this tile (its Q and dO stage is free); dQ is staged
        add_dq_tile(step, q0);     // it is added while the next tile runs
        if (warpgroup == 0 && lane == 0 && wq < QUERY_PARTS && step + 2 < steps)
            load_query_part(step + 2, wq);  // the stage just freed
        // The next tile's lse and Dsum (dS was their last use in this one), loaded here, after
        // the tile's last fence: a proxy fence waits for the thread's loads still in flight, so
        // loads issued before the fences above held each of them up by their whole latency
        // (Nsight Compute, H200: the two fences and barriers of the tile were its most-sampled
        // instructions, waiting on the long scoreboard). From here they have the next tile's
        // S and dP products to land.
        if (step + 1 < steps) load_row_stats(q0 + BW_BLOCK_M);
    }
    bulk_wait_all();  // before the block's shared memory goes away

    // dK (scaled) and dV of this thread's keys into dqkv's k and v slots.
    write_dk_dv_rows<T>(static_cast<T *>(a.dqkv), view, dk, dv, key0 + 16 * wq + g, seq, scale, keep_scale);
#else
    (void)q_map, (void)kv_map, (void)do_map, (void)dq_map, (void)a, (void)order, (void)scale;
    __trap();
#endif
}

// One instantiation of the kernel, its shared-memory limit set on first use.
template <typename T, int D, DqScheme DQ, bool DETERMINISTIC>
void launch_kernel(const BwdArgs &a, const KeyBlockOrder &order, const BackwardTensorMaps &maps) {
    constexpr size_t smem = smem_bytes<D>();
    allow_dynamic_smem<flash_backward_wgmma_kernel<T, D, DQ, DETERMINISTIC>>(smem);
    const int blocks = order.key_blocks * a.batch * a.heads;
    flash_backward_wgmma_kernel<T, D, DQ, DETERMINISTIC>
        <<<blocks, BW_THREADS, smem>>>(maps.q, maps.kv, maps.d_o, maps.dq, a, order, 1.0f / sqrtf((float)D));
    CHECK_LAUNCH();
}

}  // namespace

size_t flash_backward_wgmma_smem_bytes(int head_dim) {
    return head_dim == 128 ? smem_bytes<128>() : smem_bytes<64>();
}

// The kernel's way of computing dQ: at D = 128 its only one, at D = 64 the caller's choice.
static DqScheme dq_scheme(int head_dim, FlashDq64 dq64) {
    return head_dim == 128 ? COLUMN_HALVES : dq64 == FLASH_DQ64_BY_TURNS ? BY_TURNS : OWN_KEYS;
}

int flash_backward_wgmma_slice_keys(int head_dim, FlashDq64 dq64) { return dq_slice_keys(dq_scheme(head_dim, dq64)); }

template <typename T, int D>
void flash_backward_wgmma(const BwdArgs &a, FlashDq64 dq64, AttentionCausalOrder causal_order) {
    const DqScheme dq = dq_scheme(D, dq64);
    const int bh_count = a.batch * a.heads, key_blocks = ceil_div(a.seq, BW_BLOCK_N);
    if ((int64_t)key_blocks * bh_count > INT32_MAX)
        DIE("flash attention backward: %d key blocks x %d heads is more blocks than one launch takes", key_blocks,
            bh_count);
    // Without the mask every key block costs the same; with it, key block 0 costs the most, and
    // the natural order (and ATTENTION_CAUSAL_HEAVY_FIRST_PER_HEAD, the same here) starts
    // each head there already.
    const KeyBlockOrder order = flash_backward_key_order(a.seq, D, bh_count, BW_BLOCK_N, a.causal,
                                                         causal_order == ATTENTION_CAUSAL_HEAVY_FIRST);
    // Q and dO in boxes of 64 tokens, K and V of 128; dQ's accumulator, deterministic one per
    // slice of dq_slice_keys keys ([slices * batch * heads][seq][D] floats).
    const int slices = a.deterministic ? (int)ceil_div(a.seq, dq_slice_keys(dq)) : 1;
    const BackwardTensorMaps maps = backward_tensor_maps<T>(a, D, BW_BLOCK_M, BW_BLOCK_N, slices * bh_count);
    if constexpr (D == 128) {
        if (a.deterministic)
            launch_kernel<T, D, COLUMN_HALVES, true>(a, order, maps);
        else
            launch_kernel<T, D, COLUMN_HALVES, false>(a, order, maps);
    } else if (dq == BY_TURNS) {
        if (a.deterministic)
            launch_kernel<T, D, BY_TURNS, true>(a, order, maps);
        else
            launch_kernel<T, D, BY_TURNS, false>(a, order, maps);
    } else {
        if (a.deterministic)
            launch_kernel<T, D, OWN_KEYS, true>(a, order, maps);
        else
            launch_kernel<T, D, OWN_KEYS, false>(a, order, maps);
    }
}

template void flash_backward_wgmma<__half, 64>(const BwdArgs &, FlashDq64, AttentionCausalOrder);
template void flash_backward_wgmma<__half, 128>(const BwdArgs &, FlashDq64, AttentionCausalOrder);
template void flash_backward_wgmma<__nv_bfloat16, 64>(const BwdArgs &, FlashDq64, AttentionCausalOrder);
template void flash_backward_wgmma<__nv_bfloat16, 128>(const BwdArgs &, FlashDq64, AttentionCausalOrder);
