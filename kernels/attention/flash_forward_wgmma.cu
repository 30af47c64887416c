// Flash attention forward on Hopper's warpgroup MMA (wgmma): flash_attention.h says what it
// computes, wgmma.cuh explains the instructions and the swizzled shared-memory layout.
//
// Why a second forward kernel: the mma.sync one (flash_attention.cu) tops out near 250
// TFLOP/s on an H100, because every warp must first copy each K and V fragment from shared
// memory into its own registers (ldmatrix) for the tensor cores to use it. A wgmma reads its
// B operand (and here also Q) from shared memory itself, for four warps at once, and runs at
// Hopper's full tensor-core rate.
//
// Block: 128 queries, two warpgroups of 64 query rows each (8 warps), over tiles of 128 keys.
// Per key tile, each warpgroup computes S = Q K^T (d / 16 wgmmas, Q and K from shared
// memory), runs the online softmax on S in registers (flash_common.cuh: the very step the
// mma.sync kernel uses, since both accumulator layouts agree per warp), and adds P V with P
// taken straight from the score registers as the A operand. K and V are double-buffered: the
// next tile's copies (cp.async) run while this tile is used.
#include "common/cuda_check.h"
#include "kernels/attention/flash_common.cuh"
#include "kernels/attention/wgmma.cuh"
#include "kernels/device_utils.cuh"

namespace {

constexpr int WG_BLOCK_M = 128;  // queries per block
constexpr int WG_BLOCK_N = 128;  // keys per tile
constexpr int WG_THREADS = 256;  // two warpgroups

// A swizzled [rows x D] tile of 16-bit values is D / 64 panels of rows x 128 bytes.
template <int D>
constexpr int tile_bytes(int rows) {
    return rows * D * 2;
}

template <typename T, int D>
__global__ void __launch_bounds__(WG_THREADS, 1) flash_forward_wgmma_kernel(const FwdArgs a, float scale) {
#if WGMMA_AVAILABLE
    constexpr int Q_PANEL = WG_BLOCK_M * 128, KV_PANEL = WG_BLOCK_N * 128;  // bytes per 64-column panel
    constexpr int Q_BYTES = tile_bytes<D>(WG_BLOCK_M), KV_BYTES = tile_bytes<D>(WG_BLOCK_N);
    // The swizzle repeats every 1024 bytes, and the tiles must start on such a boundary.
    extern __shared__ unsigned char smem_raw[];
    unsigned char *q_tile = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
    unsigned char *k_tiles = q_tile + Q_BYTES;        // two buffers
    unsigned char *v_tiles = k_tiles + 2 * KV_BYTES;  // two buffers

    const T *qkv = static_cast<const T *>(a.qkv);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warpgroup = warp / 4;
    const int bh = blockIdx.y, b = bh / a.heads, h = bh % a.heads, seq = a.seq;
    const int q0 = blockIdx.x * WG_BLOCK_M;
    const QkvView view = {(int64_t)a.batch * a.qkv_row, (int64_t)b * a.qkv_row + (int64_t)h * 3 * D};
    const float scale_log2 = scale * LOG2E;
    const float keep_scale = dropout_keep_scale(a.p_drop);
    const uint64_t drop_bh = a.drop.global_bh(b, h);

    const int kv_end = a.causal ? min(seq, q0 + WG_BLOCK_M) : seq;
    const int tiles = (kv_end + WG_BLOCK_N - 1) / WG_BLOCK_N;  // >= 1: q0 < seq

    // This thread's rows (g and g + 8 of its warp's 16; warpgroup w has rows [64 w, 64 w + 64)),
    // their running max (log2 domain) and sum, and its part of their output.
    const int g = lane / 4;
    const int row_i[2] = {q0 + 16 * warp + g, q0 + 16 * warp + g + 8};
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    float o[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float s[WG_BLOCK_N / 8][4];
    uint32_t p[WG_BLOCK_N / 16][4];  // the probabilities as A operands, 16 keys each
    const uint32_t q_addr = smem_addr(q_tile) + warpgroup * 64 * 128;  // the warpgroup's rows, in each panel
    auto k_buffer = [&](int t) { return k_tiles + (t % 2) * KV_BYTES; };
    auto v_buffer = [&](int t) { return v_tiles + (t % 2) * KV_BYTES; };

    // S = Q K_t^T, 64 x 128 per warpgroup, in d / 16 steps of 16 columns of Q and K: step kk
    // reads 32 bytes into panel kk / 4 (the hardware applies the swizzle to the address).
    auto issue_scores = [&](int t) {
        const uint32_t k_addr = smem_addr(k_buffer(t));
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            const uint32_t col = (kk % 4) * 32;
            wgmma_ss<T, WG_BLOCK_N>(s, wgmma_descriptor(q_addr + (kk / 4) * Q_PANEL + col, 0, 1024),
                                    wgmma_descriptor(k_addr + (kk / 4) * KV_PANEL + col, 0, 1024), kk > 0);
        }
        wgmma_commit();
    };
    // O += P V_t: V's rows are keys, the reduction dimension, so it is read "MN-major": step kk
    // starts 16 rows (2048 bytes) further, and the panels of 64 columns are KV_PANEL apart.
    auto issue_output = [&](int t) {
        const uint32_t v_addr = smem_addr(v_buffer(t));
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < WG_BLOCK_N / 16; kk++)
            wgmma_rs_mn<T, D>(o, p[kk], wgmma_descriptor(v_addr + kk * 16 * 128, KV_PANEL, 1024));
        wgmma_commit();
    };
    // P from the scores: register pairs of the score layout are the A operand's (as mma.sync's).
    auto pack_probabilities = [&]() {
#pragma unroll
        for (int kk = 0; kk < WG_BLOCK_N / 16; kk++) {
            p[kk][0] = pack2<T>(s[2 * kk][0], s[2 * kk][1]);
            p[kk][1] = pack2<T>(s[2 * kk][2], s[2 * kk][3]);
            p[kk][2] = pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            p[kk][3] = pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
        }
    };
    auto softmax = [&](int t, float (&alpha)[2]) {
        online_softmax_step(s, m, l, alpha, row_i, t * WG_BLOCK_N, seq, a.causal, scale_log2, a.p_drop, keep_scale,
                            drop_bh, a.seed, a.offset);
    };
    // The loads: iteration t reads K_t and V_(t-1), and meanwhile copies K_(t+1) and V_t into
    // the other buffers (whose previous tiles, K_(t-1) and V_(t-2), iteration t-1 finished).
    const T *k_rows = qkv + view.at(0, 1, D), *v_rows = qkv + view.at(0, 2, D);
    auto load_next = [&](int t) {
        if (t + 1 < tiles)
            load_swizzled<T, D, WG_BLOCK_N, WG_THREADS>(k_buffer(t + 1), k_rows, view.token_stride, (t + 1) * WG_BLOCK_N,
                                                        seq);
        load_swizzled<T, D, WG_BLOCK_N, WG_THREADS>(v_buffer(t), v_rows, view.token_stride, t * WG_BLOCK_N, seq);
        cp_async_commit();
    };

    // Tile 0: only its scores.
    load_swizzled<T, D, WG_BLOCK_M, WG_THREADS>(q_tile, qkv + view.at(0, 0, D), view.token_stride, q0, seq);
    load_swizzled<T, D, WG_BLOCK_N, WG_THREADS>(k_buffer(0), qkv + view.at(0, 1, D), view.token_stride, 0, seq);
    cp_async_commit();
    load_next(0);
    cp_async_wait<1>();  // Q and K_0
    fence_shared_for_wgmma();
    __syncthreads();
    issue_scores(0);
    wgmma_wait<0>();
    wgmma_settle(s);
    float alpha[2];
    softmax(0, alpha);  // o is still zero: nothing to rescale
    pack_probabilities();

    // Tile t: the scores of t and the output of t - 1 are issued together, so the tensor cores
    // work on P_(t-1) V_(t-1) while this warpgroup runs the softmax of tile t (FlashAttention-3's
    // overlap within a warpgroup). o may be rescaled only once that product has landed.
    for (int t = 1; t < tiles; t++) {
        cp_async_wait<0>();  // K_t and V_(t-1)
        fence_shared_for_wgmma();
        __syncthreads();  // everyone's copies landed; everyone finished iteration t - 1
        issue_scores(t);
        issue_output(t - 1);
        load_next(t);  // after the products are on their way: other buffers than theirs
        wgmma_wait<1>();  // the scores
        wgmma_settle(s);
        softmax(t, alpha);
        wgmma_wait<0>();  // the output
        wgmma_settle(o);
        wgmma_settle(p);  // P_(t-1)'s registers stay untouched until its product has landed
        rescale_output(o, alpha);
        pack_probabilities();
    }
    cp_async_wait<0>();  // the last V
    fence_shared_for_wgmma();
    __syncthreads();
    issue_output(tiles - 1);
    wgmma_wait<0>();
    wgmma_settle(o);
    wgmma_settle(p);

    const int64_t token_stride = (int64_t)a.batch * a.ctx_row;
    const int64_t head_offset = (int64_t)b * a.ctx_row + (int64_t)h * D;
    write_output_rows<T>(static_cast<T *>(a.ctx), a.lse + (int64_t)bh * seq, o, m, l, row_i, seq, token_stride,
                         head_offset);
#else
    (void)a, (void)scale;
    __trap();
#endif
}

}  // namespace

template <typename T, int D>
void flash_forward_wgmma(const FwdArgs &a) {
    // Q, two K and two V buffers, and room to align them to 1024 bytes.
    const size_t smem = (size_t)tile_bytes<D>(WG_BLOCK_M) + 4 * (size_t)tile_bytes<D>(WG_BLOCK_N) + 1024;
    static bool configured = false;
    if (!configured) {
        CUDA_CHECK(cudaFuncSetAttribute(flash_forward_wgmma_kernel<T, D>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        configured = true;
    }
    dim3 grid(ceil_div(a.seq, WG_BLOCK_M), a.batch * a.heads);
    flash_forward_wgmma_kernel<T, D><<<grid, WG_THREADS, smem>>>(a, 1.0f / sqrtf((float)D));
    CHECK_LAUNCH();
}

template void flash_forward_wgmma<__half, 64>(const FwdArgs &);
template void flash_forward_wgmma<__half, 128>(const FwdArgs &);
template void flash_forward_wgmma<__nv_bfloat16, 64>(const FwdArgs &);
template void flash_forward_wgmma<__nv_bfloat16, 128>(const FwdArgs &);
