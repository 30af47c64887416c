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
// and runs at Hopper's full tensor-core rate: this kernel reaches 520-540 TFLOP/s.
//
// Block: 128 queries of one head, three warpgroups with different jobs (FlashAttention-3's
// layout):
//   producer (warpgroup 0): one thread issues TMA copies of Q once and of K and V tile by tile
//     into two stages each, as soon as the consumers have released a stage;
//   consumers (warpgroups 1 and 2, 64 query rows each): per tile of 128 keys, S = Q K^T (d / 16
//     wgmmas), the online softmax on S in registers (flash_common.cuh: the very step the
//     mma.sync kernel uses, since both accumulator layouts agree per warp), and O += P V with
//     P straight from the score registers as the A operand.
// The consumers never wait for each other's copies (no __syncthreads per tile) and take turns
// to issue their products ("ping-pong"), so that one's softmax runs while the other's
// products keep the tensor cores busy.
#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu.h"
#include "kernels/attention/flash_common.cuh"
#include "kernels/attention/flash_kernels.cuh"
#include "kernels/attention/hopper_pipeline.cuh"
#include "kernels/attention/wgmma.cuh"
#include "kernels/device_utils.cuh"

namespace {

constexpr int WG_BLOCK_M = 128;  // queries per block
constexpr int WG_BLOCK_N = 128;  // keys per tile
constexpr int WG_THREADS = 384;  // a producer warpgroup and two consumer warpgroups
// (maybe_unused: the stub compiled for other GPUs than sm_90a does not use them.)
[[maybe_unused]] constexpr int CONSUMERS = 256;  // consumer threads
[[maybe_unused]] constexpr int PINGPONG = 3;     // named barriers 3 and 4: consumer 0's, consumer 1's turn

// A swizzled [rows x D] tile of 16-bit values is D / 64 panels of rows x 128 bytes.
template <int D>
constexpr int tile_bytes(int rows) {
    return rows * D * 2;
}

// The block's barriers: a stage's "full" completes when its copy has landed, "empty" when
// both consumers are done with it.
struct Barriers {
    uint64_t q_full, k_full[2], v_full[2], k_empty[2], v_empty[2];
};

template <typename T, int D>
__global__ void __launch_bounds__(WG_THREADS, 1)
    flash_forward_wgmma_kernel(const __grid_constant__ CUtensorMap qkv_map, const __grid_constant__ FwdArgs a,
                               float scale) {
#if WGMMA_AVAILABLE
    constexpr int Q_PANEL = WG_BLOCK_M * 128, KV_PANEL = WG_BLOCK_N * 128;  // bytes per 64-column panel
    constexpr int Q_BYTES = tile_bytes<D>(WG_BLOCK_M), KV_BYTES = tile_bytes<D>(WG_BLOCK_N);
    // The swizzle repeats every 1024 bytes, and the tiles must start on such a boundary.
    extern __shared__ unsigned char smem_raw[];
    __shared__ Barriers bars;
    unsigned char *q_tile = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
    unsigned char *k_tiles = q_tile + Q_BYTES;        // two stages
    unsigned char *v_tiles = k_tiles + 2 * KV_BYTES;  // two stages

    const int warpgroup = threadIdx.x / 128, lane = threadIdx.x % 32;
    const int bh = blockIdx.y, b = bh / a.heads, h = bh % a.heads, seq = a.seq;
    const int q0 = blockIdx.x * WG_BLOCK_M;
    const int kv_end = a.causal ? min(seq, q0 + WG_BLOCK_M) : seq;
    const int tiles = (kv_end + WG_BLOCK_N - 1) / WG_BLOCK_N;  // >= 1: q0 < seq

    if (threadIdx.x == 0) {
        mbarrier_init(&bars.q_full, 1);
        for (int s = 0; s < 2; s++) {
            mbarrier_init(&bars.k_full[s], 1), mbarrier_init(&bars.v_full[s], 1);
            mbarrier_init(&bars.k_empty[s], CONSUMERS), mbarrier_init(&bars.v_empty[s], CONSUMERS);
        }
        fence_shared_for_wgmma();  // the initialised barriers, for the TMA unit
    }
    __syncthreads();  // the last block-wide barrier: from here on the warpgroups go their own ways

    if (warpgroup == 0) {  // ---- the producer
        warpgroup_release_registers<24>();
        if (threadIdx.x != 0) return;
        // The tensor map sees qkv as [seq][batch][qkv_row]; a box is 128 rows x 64 columns of
        // one batch entry. Column of panel `panel` of part 0/1/2 (q/k/v) of head h:
        auto col = [&](int part, int panel) { return h * 3 * D + part * D + 64 * panel; };
        mbarrier_arrive_expect_tx(&bars.q_full, Q_BYTES);
        for (int panel = 0; panel < D / 64; panel++)
            tma_load_3d(q_tile + panel * Q_PANEL, &qkv_map, col(0, panel), b, q0, &bars.q_full);
        for (int t = 0; t < tiles; t++) {
            const int s = t % 2, use = t / 2;  // stage, and how often it was filled before
            if (use > 0) mbarrier_wait(&bars.k_empty[s], (use - 1) & 1);
            mbarrier_arrive_expect_tx(&bars.k_full[s], KV_BYTES);
            for (int panel = 0; panel < D / 64; panel++)
                tma_load_3d(k_tiles + s * KV_BYTES + panel * KV_PANEL, &qkv_map, col(1, panel), b,
                            t * WG_BLOCK_N, &bars.k_full[s]);
            if (use > 0) mbarrier_wait(&bars.v_empty[s], (use - 1) & 1);
            mbarrier_arrive_expect_tx(&bars.v_full[s], KV_BYTES);
            for (int panel = 0; panel < D / 64; panel++)
                tma_load_3d(v_tiles + s * KV_BYTES + panel * KV_PANEL, &qkv_map, col(2, panel), b,
                            t * WG_BLOCK_N, &bars.v_full[s]);
        }
        return;
    }

    // ---- the consumers
    warpgroup_claim_registers<240>();
    const int consumer = warpgroup - 1, warp = threadIdx.x / 32 - 4;  // warp 0..7 of the consumers
    const float scale_log2 = scale * LOG2E;
    const bool dropping = a.p_drop > 0.0f;
    const uint32_t drop_threshold = dropout_threshold(a.p_drop);

    // This thread's rows (g and g + 8 of its warp's 16; consumer c has rows [64 c, 64 c + 64)),
    // their running max (log2 domain) and sum, and its part of their output.
    const int g = lane / 4;
    const int row_i[2] = {q0 + 16 * warp + g, q0 + 16 * warp + g + 8};
    const uint64_t drop_bh = a.drop.global_bh(b, h);
    const uint64_t row_group[2] = {dropout_row_group(drop_bh, row_i[0], seq), dropout_row_group(drop_bh, row_i[1], seq)};
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    float o[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float s[WG_BLOCK_N / 8][4];
    uint32_t p[WG_BLOCK_N / 16][4];  // the probabilities as A operands, 16 keys each
    const uint32_t q_addr = smem_addr(q_tile) + consumer * 64 * 128;  // the consumer's rows, in each panel

    // S = Q K_t^T, 64 x 128 per consumer, in d / 16 steps of 16 columns of Q and K: step kk
    // reads 32 bytes into panel kk / 4 (the hardware applies the swizzle to the address).
    auto issue_scores = [&](int t) {
        const uint32_t k_addr = smem_addr(k_tiles + (t % 2) * KV_BYTES);
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
        const uint32_t v_addr = smem_addr(v_tiles + (t % 2) * KV_BYTES);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < WG_BLOCK_N / 16; kk++)
            wgmma_rs_mn<T, D>(o, p[kk], wgmma_descriptor(v_addr + kk * 16 * 128, KV_PANEL, 1024));
        wgmma_commit();
    };
    // The dropout masks of tile t's two blocks of 64 keys, drawn while the tensor cores work.
    TileDropout drop[WG_BLOCK_N / 64];
    auto draw_dropout = [&](int t) {
#pragma unroll
        for (int part = 0; part < WG_BLOCK_N / 64; part++)
            drop[part] = tile_dropout(row_group, t * (WG_BLOCK_N / 64) + part, a.keys, a.offset, drop_threshold);
    };
    // P from the scores: register pairs of the score layout are the A operand's (as mma.sync's),
    // then dropped by ANDing them with the masks.
    auto pack_probabilities = [&]() {
#pragma unroll
        for (int kk = 0; kk < WG_BLOCK_N / 16; kk++) {
            p[kk][0] = pack2<T>(s[2 * kk][0], s[2 * kk][1]);
            p[kk][1] = pack2<T>(s[2 * kk][2], s[2 * kk][3]);
            p[kk][2] = pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            p[kk][3] = pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
            if (dropping) drop_a_fragment(p[kk], drop[kk / 4], kk % 4);
        }
    };
    auto softmax = [&](int t, float (&alpha)[2]) {
        online_softmax_step(s, m, l, alpha, row_i, t * WG_BLOCK_N, seq, a.causal, scale_log2);
        if (dropping) draw_dropout(t);
    };
    // Ping-pong: consumer c issues its products only in its turn and then hands the turn over.
    // Consumer 1 skips the hand-over after its last issue, and hands consumer 0 its first turn,
    // so that every barrier use has 128 threads waiting and 128 arriving.
    auto my_turn = [&]() { named_barrier_sync(PINGPONG + consumer, CONSUMERS); };
    auto your_turn = [&]() { named_barrier_arrive(PINGPONG + 1 - consumer, CONSUMERS); };
    if (consumer == 1) your_turn();

    // Tile 0: only its scores.
    mbarrier_wait(&bars.q_full, 0);
    mbarrier_wait(&bars.k_full[0], 0);
    my_turn();
    issue_scores(0);
    your_turn();
    wgmma_wait<0>();
    wgmma_settle(s);
    mbarrier_arrive(&bars.k_empty[0]);
    float alpha[2];
    softmax(0, alpha);  // o is still zero: nothing to rescale
    pack_probabilities();

    // Tile t: the scores of t and the output of t - 1 are issued together, so the tensor cores
    // work on P_(t-1) V_(t-1) while this consumer runs the softmax of tile t (FlashAttention-3's
    // overlap within a warpgroup). o may be rescaled only once that product has landed.
    for (int t = 1; t < tiles; t++) {
        mbarrier_wait(&bars.k_full[t % 2], (t / 2) & 1);
        mbarrier_wait(&bars.v_full[(t - 1) % 2], ((t - 1) / 2) & 1);
        my_turn();
        issue_scores(t);
        issue_output(t - 1);
        your_turn();
        wgmma_wait<1>();  // the scores
        wgmma_settle(s);
        mbarrier_arrive(&bars.k_empty[t % 2]);
        softmax(t, alpha);
        wgmma_wait<0>();  // the output
        wgmma_settle(o);
        wgmma_settle(p);  // P_(t-1)'s registers stay untouched until its product has landed
        mbarrier_arrive(&bars.v_empty[(t - 1) % 2]);
        rescale_output(o, alpha);
        pack_probabilities();
    }
    mbarrier_wait(&bars.v_full[(tiles - 1) % 2], ((tiles - 1) / 2) & 1);
    my_turn();
    issue_output(tiles - 1);
    if (consumer == 0) your_turn();
    wgmma_wait<0>();
    wgmma_settle(o);
    wgmma_settle(p);

    const int64_t token_stride = (int64_t)a.batch * a.ctx_row;
    const int64_t head_offset = (int64_t)b * a.ctx_row + (int64_t)h * D;
    write_output_rows<T>(static_cast<T *>(a.ctx), a.lse + (int64_t)bh * seq, o, m, l, row_i, seq, token_stride,
                         head_offset, dropout_keep_scale(a.p_drop));
#else
    (void)qkv_map, (void)a, (void)scale;
    __trap();
#endif
}

// Whether this image holds the kernels above: the same test as theirs (WGMMA_AVAILABLE), in
// the same translation unit, so compiled for the same targets and loaded from the same
// image as they are. A build without sm_90a code runs on a Hopper GPU through the PTX of an
// older target, JIT-compiled, in which the kernels above are traps.
__device__ int wgmma_image_flag;
__global__ void wgmma_image_probe_kernel() { wgmma_image_flag = WGMMA_AVAILABLE; }

// Q, two K and two V stages (the swizzled 16-bit tiles of tile_bytes), and room to align
// them to 1024 bytes.
constexpr size_t forward_smem_bytes(int head_dim) {
    return (size_t)WG_BLOCK_M * head_dim * 2 + 4 * (size_t)WG_BLOCK_N * head_dim * 2 + 1024;
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

size_t flash_forward_wgmma_smem_bytes(int head_dim) { return forward_smem_bytes(head_dim); }

template <typename T, int D>
void flash_forward_wgmma(const FwdArgs &a) {
    static_assert(WG_BLOCK_M == WG_BLOCK_N, "the tensor map's box serves Q and K/V tiles alike");
    static_assert(forward_smem_bytes(D) == (size_t)5 * tile_bytes<D>(WG_BLOCK_N) + 1024, "the kernel's carve-up");
    constexpr size_t smem = forward_smem_bytes(D);
    static bool configured = false;
    if (!configured) {
        CUDA_CHECK(cudaFuncSetAttribute(flash_forward_wgmma_kernel<T, D>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        configured = true;
    }
    dim3 grid(ceil_div(a.seq, WG_BLOCK_M), a.batch * a.heads);
    // The TMA sees qkv as [seq][batch][qkv_row] and copies boxes of 128 rows x 64 columns.
    const CUtensorMap qkv_map = tensor_map_rows<T>(a.qkv, a.qkv_row, a.batch, a.seq, WG_BLOCK_N);
    flash_forward_wgmma_kernel<T, D><<<grid, WG_THREADS, smem>>>(qkv_map, a, 1.0f / sqrtf((float)D));
    CHECK_LAUNCH();
}

template void flash_forward_wgmma<__half, 64>(const FwdArgs &);
template void flash_forward_wgmma<__half, 128>(const FwdArgs &);
template void flash_forward_wgmma<__nv_bfloat16, 64>(const FwdArgs &);
template void flash_forward_wgmma<__nv_bfloat16, 128>(const FwdArgs &);
