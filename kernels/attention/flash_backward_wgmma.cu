// Flash attention backward on Hopper's warpgroup MMA (wgmma), head dim 128: the same
// algorithm as the mma.sync backward in flash_attention.cu (FlashAttention-2's), with the five
// matrix products done by wgmmas reading their operands from 128-byte-swizzled shared memory
// (wgmma.cuh) instead of by warps loading fragments into registers.
//
// Block: 128 keys of one head, two warpgroups; warpgroup w owns keys [64 w, 64 w + 64) and
// keeps their dK and dV in registers while the block walks over the queries, 64 at a time.
// Per query tile, warpgroup w:
//   S  = Q K_w^T, dP = dO V_w^T        64 queries x 64 keys, Q, K, dO, V all K-major
//   P, dS in registers (as the mma.sync kernel), then stored to shared memory
//   dV_w += P_w^T dO, dK_w += dS_w^T Q   A read transposed (keys are P's contiguous dimension)
//   dQ[:, 64 w, + 64] = dS K            over all 128 keys (both warpgroups' dS), added into
//                                       the float accumulator with atomics
// The next query tile's Q and dO are copied (cp.async) while this one is used.
#include "common/cuda_check.h"
#include "kernels/attention/flash_common.cuh"
#include "kernels/attention/wgmma.cuh"
#include "kernels/device_utils.cuh"

namespace {

constexpr int D = 128;
constexpr int BW_BLOCK_N = 128;  // keys per block
constexpr int BW_BLOCK_M = 64;   // queries per step
constexpr int BW_THREADS = 256;  // two warpgroups

constexpr int KV_PANEL = BW_BLOCK_N * 128;  // bytes of a 64-column panel of K or V (128 rows)
constexpr int QO_PANEL = BW_BLOCK_M * 128;  // ... of Q or dO (64 rows)
constexpr int PS_PANEL = BW_BLOCK_M * 128;  // ... of P or dS: 64 queries x one warpgroup's 64 keys
constexpr int KV_BYTES = 2 * KV_PANEL, QO_BYTES = 2 * QO_PANEL, PS_BYTES = 2 * PS_PANEL;
// dQ of a query tile waits in shared memory, float rows padded by 8 floats so that a warp's
// 8-byte stores (8 rows x 4 column pairs) fall in different banks.
constexpr int DQ_PITCH = D + 8;
constexpr int DQ_BYTES = BW_BLOCK_M * DQ_PITCH * 4;
constexpr size_t SMEM_BYTES = 2 * KV_BYTES + 4 * QO_BYTES + 2 * PS_BYTES + DQ_BYTES + 1024;  // + alignment room

// dQ's rows are added into the float accumulator by the TMA unit: one bulk reduction
// (cp.reduce.async.bulk ... add.f32) per 128-float row, issued by one thread each, instead
// of 8-byte atomics from every thread - those took a fifth of the kernel's time (2.67 ms
// with them, 2.10 without, b4 h32 s2048 d128; FlashAttention-3 does the same).
__device__ __forceinline__ void bulk_reduce_add(float *global_dst, const float *shared_src, int bytes) {
    asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;\n"
                 ::"l"(global_dst), "r"(smem_addr(shared_src)), "r"(bytes) : "memory");
    asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
}
// Until this thread's bulk reductions have read their shared-memory source.
__device__ __forceinline__ void bulk_wait_read() { asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory"); }
// Until they have completed.
__device__ __forceinline__ void bulk_wait_all() { asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory"); }

template <typename T>
__global__ void __launch_bounds__(BW_THREADS, 1) flash_backward_wgmma_kernel(const BwdArgs a, float scale) {
#if WGMMA_AVAILABLE
    extern __shared__ unsigned char smem_raw[];
    unsigned char *k_tile = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
    unsigned char *v_tile = k_tile + KV_BYTES;
    unsigned char *q_tiles = v_tile + KV_BYTES;     // two buffers
    unsigned char *do_tiles = q_tiles + 2 * QO_BYTES;  // two buffers
    unsigned char *p_tile = do_tiles + 2 * QO_BYTES;   // dropped probabilities, [query][key]
    unsigned char *ds_tile = p_tile + PS_BYTES;        // dS, [query][key]
    float *dq_stage = reinterpret_cast<float *>(ds_tile + PS_BYTES);  // dQ of a query tile

    const T *qkv = static_cast<const T *>(a.qkv), *dctx = static_cast<const T *>(a.dctx);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warpgroup = warp / 4, wq = warp % 4;
    const int g = lane / 4, c = lane % 4;
    const int bh = blockIdx.y, b = bh / a.heads, h = bh % a.heads, seq = a.seq;
    const int k0 = blockIdx.x * BW_BLOCK_N;
    const int key0 = k0 + 64 * warpgroup;  // this warpgroup's first key
    const QkvView view = {(int64_t)a.batch * a.qkv_row, (int64_t)b * a.qkv_row + (int64_t)h * 3 * D};
    const int64_t ctx_stride = (int64_t)a.batch * a.ctx_row, ctx_offset = (int64_t)b * a.ctx_row + (int64_t)h * D;
    const float scale_log2 = scale * LOG2E;
    const float keep_scale = dropout_keep_scale(a.p_drop);
    const T *q_rows = qkv + view.at(0, 0, D), *do_rows = dctx + ctx_offset;

    load_swizzled<T, D, BW_BLOCK_N, BW_THREADS>(k_tile, qkv + view.at(0, 1, D), view.token_stride, k0, seq);
    load_swizzled<T, D, BW_BLOCK_N, BW_THREADS>(v_tile, qkv + view.at(0, 2, D), view.token_stride, k0, seq);
    const int m_start = a.causal ? (k0 / BW_BLOCK_M) * BW_BLOCK_M : 0;
    load_swizzled<T, D, BW_BLOCK_M, BW_THREADS>(q_tiles, q_rows, view.token_stride, m_start, seq);
    load_swizzled<T, D, BW_BLOCK_M, BW_THREADS>(do_tiles, do_rows, ctx_stride, m_start, seq);
    cp_async_commit();

    // dK and dV of keys key0 + 16 wq + g (+ 8): wgmma accumulators of 64 keys x 128 columns.
    float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) dk[n][e] = dv[n][e] = 0.0f;

    const uint32_t k_addr = smem_addr(k_tile), v_addr = smem_addr(v_tile);
    const uint32_t p_addr = smem_addr(p_tile), ds_addr = smem_addr(ds_tile);
    // Thread r < 64 adds row r of the staged dQ of query tile q0 into the accumulator.
    auto add_dq_row = [&](int q0) {
        const int i = q0 + (int)threadIdx.x;
        if (threadIdx.x < BW_BLOCK_M && i < seq)
            bulk_reduce_add(a.dq_accum + ((int64_t)bh * seq + i) * D, dq_stage + threadIdx.x * DQ_PITCH, D * 4);
    };
    int step = 0, last_q0 = m_start;
    for (int q0 = m_start; q0 < seq; q0 += BW_BLOCK_M, step++) {
        last_q0 = q0;
        cp_async_wait<0>();
        fence_shared_for_wgmma();  // also makes the previous tile's staged dQ visible to the TMA unit
        __syncthreads();  // this tile landed; everyone is done with the previous one
        if (q0 > m_start) add_dq_row(q0 - BW_BLOCK_M);  // the previous tile's dQ, while this one runs
        if (q0 + BW_BLOCK_M < seq) {
            const int next = (step + 1) % 2;
            load_swizzled<T, D, BW_BLOCK_M, BW_THREADS>(q_tiles + next * QO_BYTES, q_rows, view.token_stride,
                                                        q0 + BW_BLOCK_M, seq);
            load_swizzled<T, D, BW_BLOCK_M, BW_THREADS>(do_tiles + next * QO_BYTES, do_rows, ctx_stride,
                                                        q0 + BW_BLOCK_M, seq);
            cp_async_commit();
        }
        const uint32_t q_addr = smem_addr(q_tiles + (step % 2) * QO_BYTES);
        const uint32_t do_addr = smem_addr(do_tiles + (step % 2) * QO_BYTES);

        // S = Q K_w^T and dP = dO V_w^T, two groups: step kk takes 16 of the 128 columns (panel
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

        // While the tensor cores work: the dropout mask of this thread's queries 16 wq + g (+ 8)
        // and keys 8n + 2c (+ 1) of the warpgroup's 64, and their lse and Dsum.
        uint32_t keep[2] = {0, 0};
        if (a.p_drop > 0.0f) {
            const uint64_t dbh = a.drop.global_bh(b, h);
            const uint64_t row_index[2] = {(dbh * seq + min(q0 + 16 * wq + g, seq - 1)) * seq,
                                           (dbh * seq + min(q0 + 16 * wq + g + 8, seq - 1)) * seq};
            dropout_tile_keep_bits(keep, row_index, key0, seq, a.seed, a.offset, a.p_drop);
        }
        float lse_i[2], dsum_i[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const int i = q0 + 16 * wq + g + 8 * r;
            lse_i[r] = i < seq ? a.lse[(int64_t)bh * seq + i] * LOG2E : 0.0f;
            dsum_i[r] = i < seq ? a.dsum[(int64_t)bh * seq + i] : 0.0f;
        }

        // P = exp(S scale - lse) (kept in s) and Pd = P * mask, stored as 16-bit pairs into the
        // warpgroup's panel of the P tile (while dP is still being computed).
        // Masked scores become -inf (exp: 0); only tiles at the edges or, when causal, on the
        // diagonal need it.
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
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const int il = 16 * wq + g + 8 * r;
#pragma unroll
            for (int n = 0; n < 8; n++) {
#pragma unroll
                for (int e = 0; e < 2; e++) s[n][2 * r + e] = exp2f(s[n][2 * r + e] * scale_log2 - lse_i[r]);
                const float k0f = a.p_drop > 0.0f ? dropout_factor(keep, r, n, 0, keep_scale) : 1.0f;
                const float k1f = a.p_drop > 0.0f ? dropout_factor(keep, r, n, 1, keep_scale) : 1.0f;
                *reinterpret_cast<uint32_t *>(p_tile + warpgroup * PS_PANEL + swizzled_offset(il, n) + 4 * c) =
                    pack2<T>(s[n][2 * r] * k0f, s[n][2 * r + 1] * k1f);
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

        // dS = P * (dP * mask - Dsum) into the dS tile.
        wgmma_wait<1>();
        wgmma_settle(dp);
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const int il = 16 * wq + g + 8 * r;
#pragma unroll
            for (int n = 0; n < 8; n++) {
                const float k0f = a.p_drop > 0.0f ? dropout_factor(keep, r, n, 0, keep_scale) : 1.0f;
                const float k1f = a.p_drop > 0.0f ? dropout_factor(keep, r, n, 1, keep_scale) : 1.0f;
                *reinterpret_cast<uint32_t *>(ds_tile + warpgroup * PS_PANEL + swizzled_offset(il, n) + 4 * c) =
                    pack2<T>(s[n][2 * r] * (dp[n][2 * r] * k0f - dsum_i[r]),
                             s[n][2 * r + 1] * (dp[n][2 * r + 1] * k1f - dsum_i[r]));
            }
        }
        bulk_wait_read();  // (threads that added dQ rows) the staging buffer is free again
        fence_shared_for_wgmma();
        __syncthreads();  // dQ needs both warpgroups' dS

        // dK_w += dS_w^T Q, as dV. dQ[:, 64 w, + 64] = dS K: A = dS, keys contiguous (panel
        // kk / 4); B = K's panel w, read transposed, 16 keys (2048 bytes) per step.
        float dq[8][4];
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < BW_BLOCK_M / 16; kk++)
            wgmma_ss<T, D, 1, 1>(dk, wgmma_descriptor(ds_addr + warpgroup * PS_PANEL + kk * 2048, PS_PANEL, 1024),
                                 wgmma_descriptor(q_addr + kk * 2048, QO_PANEL, 1024));
#pragma unroll
        for (int kk = 0; kk < BW_BLOCK_N / 16; kk++)
            wgmma_ss<T, 64, 0, 1>(dq, wgmma_descriptor(ds_addr + (kk / 4) * PS_PANEL + (kk % 4) * 32, 0, 1024),
                                  wgmma_descriptor(k_addr + warpgroup * KV_PANEL + kk * 2048, KV_PANEL, 1024),
                                  kk > 0);
        wgmma_commit();
        wgmma_wait<0>();
        wgmma_settle(dv);
        wgmma_settle(dk);
        wgmma_settle(dq);

#pragma unroll
        for (int r = 0; r < 2; r++) {
            float *row = dq_stage + (16 * wq + g + 8 * r) * DQ_PITCH + 64 * warpgroup;
#pragma unroll
            for (int n = 0; n < 8; n++)
                *reinterpret_cast<float2 *>(row + 8 * n + 2 * c) =
                    make_float2(dq[n][2 * r] * scale, dq[n][2 * r + 1] * scale);
        }
    }
    fence_shared_for_wgmma();
    __syncthreads();
    add_dq_row(last_q0);  // the last tile's dQ
    bulk_wait_all();  // before the block's shared memory goes away

    // dK (scaled) and dV of this thread's keys into dqkv's k and v slots.
    T *dqkv = static_cast<T *>(a.dqkv);
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int j = key0 + 16 * wq + g + 8 * r;
        if (j >= seq) continue;
        T *dkp = dqkv + view.at(j, 1, D), *dvp = dqkv + view.at(j, 2, D);
#pragma unroll
        for (int n = 0; n < D / 8; n++) {
            *reinterpret_cast<uint32_t *>(dkp + 8 * n + 2 * c) = pack2<T>(dk[n][2 * r] * scale, dk[n][2 * r + 1] * scale);
            *reinterpret_cast<uint32_t *>(dvp + 8 * n + 2 * c) = pack2<T>(dv[n][2 * r], dv[n][2 * r + 1]);
        }
    }
#else
    (void)a, (void)scale;
    __trap();
#endif
}

}  // namespace

template <typename T>
void flash_backward_wgmma_d128(const BwdArgs &a) {
    static bool configured = false;
    if (!configured) {
        CUDA_CHECK(cudaFuncSetAttribute(flash_backward_wgmma_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)SMEM_BYTES));
        configured = true;
    }
    dim3 grid(ceil_div(a.seq, BW_BLOCK_N), a.batch * a.heads);
    flash_backward_wgmma_kernel<T><<<grid, BW_THREADS, SMEM_BYTES>>>(a, 1.0f / sqrtf((float)D));
    CHECK_LAUNCH();
}

template void flash_backward_wgmma_d128<__half>(const BwdArgs &);
template void flash_backward_wgmma_d128<__nv_bfloat16>(const BwdArgs &);
