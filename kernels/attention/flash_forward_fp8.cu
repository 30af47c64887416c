// The FP8 (E4M3) flash-attention forward on Hopper: attention_fp8.h says what it computes and
// takes; flash_forward_wgmma.cu is the 16-bit kernel whose structure this one follows, with
// less in it (no causal mask, no dropout, head dim 128 only, a static schedule only):
//   CTAs: by default persistent - one per SM, each looping over work tiles of 128 queries of one
//     head, its producer loading the next work tile's Q, K and V^T while the consumers finish
//     the current one (the kernel's comment says what carries over); or one block per work tile
//     (grid: query blocks x batch * heads; ATTENTION_FP8_PERSISTENT=0 or
//     attention_fp8_set_persistent, attention_fp8.h). 384 threads either way;
//   producer (warpgroup 0): one thread issues the TMA copies of Q once per work tile and of K and
//     V^T tile by tile (192 keys by default; 128 with ATTENTION_FP8_BLOCK_N=128) into a ring of
//     two stages each (or 3; or 4 at 128 keys: ATTENTION_FP8_STAGES), as soon as both consumers
//     have released a stage;
//   consumers (warpgroups 1, 2; 64 queries each): per tile of keys, S = Q K^T (4 wgmmas of k 32,
//     e4m3 x e4m3, float accumulators), the online softmax in registers, P converted to E4M3
//     and permuted into the A operand's layout (below), O += P V (4 wgmmas per 128 keys, A from
//     registers, B = V^T from shared memory). As in the 16-bit kernel (and by the same code,
//     flash_forward_common.cuh), S of tile t and P V of tile t - 1 are issued together, and the
//     two consumers take turns to issue (ping-pong).
//
// Shared memory: each operand tile is rows x 128 bytes (128-byte-swizzled panels, FP8: one byte
// per value). All three operands are "K-major" - the reduction dimension contiguous: d for S =
// Q K^T, the keys for O = P V - the only layout wgmma takes for FP8 operands. Q: 128 queries x
// 128 dims (16 KiB). With 192-key tiles (the default: with persistent CTAs the fastest on an
// H200, docs/results.md#h200-ninth) a stage holds K (192 keys x 128 dims, 24 KiB) and V^T as
// two panels of 128 dims x 128 keys (32 KiB, the second's last 64 keys unused: vt_tile_bytes
// below): 16 + 2 x 56 + 1 KiB (alignment) = 129 KiB at 2 stages (the default), 185 at 3; 4 do
// not fit in Hopper's 227. With 128-key tiles a stage is 16 + 16 KiB: 81 KiB at 2 stages, 113 at
// 3, 145 at 4 (a deeper ring was no faster on an H200, docs/results.md#h200-eighth).
//
// P from the score accumulator to the FP8 A operand (FlashAttention-3, section 3.3). Per warp
// (16 rows of the warpgroup's 64), lane = 4 g + c, one 32-key step kk of the tile:
//   accumulator (float), n = 4 kk + j, j = 0..3:  s[n][0..1] = row g,     keys 8 j + 2c, +1
//                                                  s[n][2..3] = row g + 8, keys 8 j + 2c, +1
//   A operand (e4m3, 4 per register, lowest key in the lowest byte; PTX ISA, "Register
//   fragments" of wgmma .e4m3 with K = 32):
//        a[0] = row g,     keys 4c .. 4c + 3        a[2] = row g,     keys 16 + 4c .. 16 + 4c + 3
//        a[1] = row g + 8, keys 4c .. 4c + 3        a[3] = row g + 8, keys 16 + 4c .. 16 + 4c + 3
// Picture for row g, keys 0..15 (a[0]; keys 16..31, a[2], alike with j + 2): which lane c holds
// key k in the accumulator, and which needs it in the operand:
//   key      0 1 | 2 3 | 4 5 | 6 7 | 8 9 | 10 11 | 12 13 | 14 15
//   holds    c0  | c1  | c2  | c3  | c0  |  c1   |  c2   |  c3      (j = 0 for keys 0..7, 1 for 8..15)
//   needs    c0  . c0  | c1  . c1  | c2  .  c2   |  c3   .  c3
// So lane c's operand register takes a pair of keys (16 bits: two e4m3 codes) from lane
// 2 (c % 2) and the next pair from lane 2 (c % 2) + 1, both of chunk j = c / 2. Byte permutes
// inside one thread cannot do it (the keys live in other lanes), so two shuffles per pair of
// operand registers do: every lane packs its 16-bit pairs of chunks j0, j1 (= 2 half, 2 half +
// 1) for rows g and g + 8 into two words, and sends in the first shuffle the word of chunk
// j0 if it is even, j1 if odd, in the second the other one:
//   even lane: first = (row g j0 | row g+8 j0), second = (row g j1 | row g+8 j1)
//   odd lane:  first = (row g j1 | row g+8 j1), second = (row g j0 | row g+8 j0)
// Lane c reads the first word from lane 2 (c % 2) + c / 2 and the second from lane 2 (c % 2) +
// 1 - c / 2: for c / 2 = 0 it reads chunk j0 from the even lane (keys 4c, 4c + 1) in the first
// and from the odd lane (keys 4c + 2, 4c + 3) in the second; for c / 2 = 1 chunk j1 from the
// odd lane (keys 4c + 2, 4c + 3) first, from the even lane (keys 4c, 4c + 1) second. One byte
// permute per register then puts the pairs in key order (the lanes and selectors:
// fp8_operand.h, which tests/attention/flash_fp8_test.c replays on the host for every lane).
// 16 shuffles and 64 conversions (cvt ... e4m3x2, two values each) per 128 keys and thread (24
// and 96 per 192-key tile), against 8 shuffles per tile for the row maxima and sums. The
// alternative - leave P's keys where the accumulator has them and permute V^T's keys to match -
// would need the caller (or an extra pass through shared memory) to write V^T in that permuted
// order; the shuffles keep the interface the plain transpose.
//
// P is multiplied by 2^ATTENTION_FP8_P_LOG2_SCALE (256) before the conversion (attention_fp8.h
// says why): the exponent's shift is 8 smaller, which costs nothing; the row sum carries the same
// factor, so O = acc / sum is unchanged, and lse subtracts 8 from the log2 of the sum.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/errors.h"
#include "common/core/gpu_arch.h"
#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu.h"
#include "kernels/attention/attention_fp8.h"
#include "kernels/attention/block_order.h"
#include "kernels/attention/env_switch.h"
#include "kernels/attention/flash_common.cuh"
#include "kernels/attention/flash_forward_common.cuh"
#include "kernels/attention/flash_kernels.cuh"
#include "kernels/attention/fp8_operand.h"
#include "kernels/attention/hopper_pipeline.cuh"
#include "kernels/attention/wgmma.cuh"
#include "kernels/device_utils.cuh"

namespace {

constexpr int HEAD_DIM = 128;                 // the only head dim
constexpr int BLOCK_M = 128;                  // queries per block (64 per consumer)
// Keys per tile (the kernel's BLOCK_N): 192 (the default) or 128 (ATTENTION_FP8_BLOCK_N,
// attention_fp8.h). S's accumulators grow with it (BLOCK_N / 2 floats per consumer thread: 96
// at 192, with O's 64 and P's BLOCK_N / 8 registers well inside the 240; 256 keys would need
// 128 + 64 + 32 at once, while S of tile t and P_(t-1) V are in flight together: too many).
constexpr int BLOCK_N_NARROW = 128, BLOCK_N_WIDE = 192;
constexpr int THREADS = 384;                  // producer + two consumer warpgroups
constexpr int PRODUCER_REGS = 24, CONSUMER_REGS = 240;  // as the 16-bit kernel's (setmaxnreg)
constexpr int TILE_BYTES = 128 * 128;         // one operand tile: 128 rows x 128 one-byte values
constexpr int MAX_STAGES = 4;  // K/V ring depth: 2 (the default), 3 or 4 (ATTENTION_FP8_STAGES)
// A K tile: block_n rows of 128 bytes (one 128-byte-swizzled panel, any number of rows). A V^T
// tile: its rows are the 128 dims and its keys contiguous, and a 128-byte-swizzled row holds
// 128 keys, so block_n keys take block_n / 128 panels rounded up, one TMA box of 128 keys each.
// At 192 keys the second panel's last 64 keys are loaded but never read (keys of the next
// tile, or zeros past seq): 1/6 more V traffic, for a layout the 128-key panels already have.
constexpr int k_tile_bytes(int block_n) { return block_n * 128; }
constexpr int vt_panels(int block_n) { return (block_n + 127) / 128; }
constexpr int vt_tile_bytes(int block_n) { return vt_panels(block_n) * TILE_BYTES; }
// Q, a ring of K and one of V^T, and the alignment to the swizzle period: with 128-key tiles
// 16 KiB + stages x 32 KiB + 1 KiB; with 192-key tiles 16 + stages x (24 + 32) + 1 (185 KiB at
// 3 stages; 4 do not fit).
constexpr int smem_bytes(int stages, int block_n) {
    return TILE_BYTES + stages * (k_tile_bytes(block_n) + vt_tile_bytes(block_n)) + 1024;
}
constexpr bool fits_smem(int stages, int block_n) { return smem_bytes(stages, block_n) <= 227 * 1024; }
[[maybe_unused]] constexpr int TURNS = 3;    // named barriers 3, 4: consumer c's turn to issue
static_assert(fits_smem(MAX_STAGES, BLOCK_N_NARROW) && fits_smem(3, BLOCK_N_WIDE), "shared memory per block");
static_assert(k_tile_bytes(BLOCK_N_WIDE) % 1024 == 0, "tiles start on the swizzle's 1024-byte period");
static_assert(128 * (PRODUCER_REGS + 2 * CONSUMER_REGS) <= THREADS * (65536 / THREADS / 8 * 8), "register pool");

struct Fp8Barriers {
    uint64_t q_full, q_empty, k_full[MAX_STAGES], v_full[MAX_STAGES], k_empty[MAX_STAGES], v_empty[MAX_STAGES];
};

struct Fp8Args {
    int seq, batch, heads;
    void *ctx;
    float *lse;
    const float *q_scale_inv, *k_scale_inv, *v_scale_inv;  // device, one float each
    float softmax_scale;                                   // 1 / sqrt(d)
};

// The device helpers exist only where the kernel's body does (other targets compile it to a
// trap, and would warn about helpers nothing calls).
#if WGMMA_AVAILABLE
// ---- FP8 wgmma (m64 n128 k32, e4m3 x e4m3, float accumulators) ----------------------------
// FP8 operands have no transpose flags: both K-major (the descriptors of wgmma.cuh, 128-byte
// swizzle; a k-step of 32 one-byte values is 32 bytes, as a 16-bit k16 step).
#define F8_ACC4(n) "+f"(d[n][0]), "+f"(d[n][1]), "+f"(d[n][2]), "+f"(d[n][3])
#define F8_ACC64                                                                                               \
    F8_ACC4(0), F8_ACC4(1), F8_ACC4(2), F8_ACC4(3), F8_ACC4(4), F8_ACC4(5), F8_ACC4(6), F8_ACC4(7), F8_ACC4(8), \
        F8_ACC4(9), F8_ACC4(10), F8_ACC4(11), F8_ACC4(12), F8_ACC4(13), F8_ACC4(14), F8_ACC4(15)
#define F8_ACC96                                                                                               \
    F8_ACC64, F8_ACC4(16), F8_ACC4(17), F8_ACC4(18), F8_ACC4(19), F8_ACC4(20), F8_ACC4(21), F8_ACC4(22), F8_ACC4(23)
#define F8_REGS64                                                                                             \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, "  \
    "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, "   \
    "%42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, "   \
    "%62, %63}"
#define F8_REGS96                                                                                             \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, "  \
    "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, "   \
    "%42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, "   \
    "%62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, "   \
    "%82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95}"

// D[64 x N] (+)= A B^T, A and B in shared memory (D = A B^T when accumulate is 0); N = 128 or
// 192 (the keys of a tile of S).
template <int N>
__device__ __forceinline__ void wgmma_e4m3_ss(float (&d)[N / 8][4], uint64_t a_desc, uint64_t b_desc, int accumulate);

template <>
__device__ __forceinline__ void wgmma_e4m3_ss<128>(float (&d)[16][4], uint64_t a_desc, uint64_t b_desc,
                                                   int accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 " F8_REGS64 ", %64, %65, p, 1, 1;\n}\n"
                 : F8_ACC64
                 : "l"(a_desc), "l"(b_desc), "r"(accumulate));
}

template <>
__device__ __forceinline__ void wgmma_e4m3_ss<192>(float (&d)[24][4], uint64_t a_desc, uint64_t b_desc,
                                                   int accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %98, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n192k32.f32.e4m3.e4m3 " F8_REGS96 ", %96, %97, p, 1, 1;\n}\n"
                 : F8_ACC96
                 : "l"(a_desc), "l"(b_desc), "r"(accumulate));
}

// D[64 x 128] += A B^T, A in registers (the layout in the file's comment), B in shared memory.
__device__ __forceinline__ void wgmma_e4m3_rs(float (&d)[16][4], const uint32_t (&a)[4], uint64_t b_desc) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 " F8_REGS64
                 ", {%64, %65, %66, %67}, %68, p, 1, 1;\n}\n"
                 : F8_ACC64
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_desc), "r"(1));
}

#undef F8_ACC4
#undef F8_ACC64
#undef F8_ACC96
#undef F8_REGS64
#undef F8_REGS96

// Two floats as two E4M3 codes (round to nearest even, saturating to +-448): lo in the low byte.
// (PTX's cvt puts its first source in the upper byte.)
__device__ __forceinline__ uint32_t e4m3x2(float lo, float hi) {
    uint16_t r;
    asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(r) : "f"(hi), "f"(lo));
    return r;
}

// P's 32-key step kk (s[4 kk .. 4 kk + 3], probabilities times 256) as the e4m3 A operand a.
template <int NB>
__device__ __forceinline__ void probabilities_to_operand(const float (&s)[NB][4], int kk, const Fp8OperandLanes &pl,
                                                         uint32_t (&a)[4]) {
#pragma unroll
    for (int half = 0; half < 2; half++) {
        const int n0 = 4 * kk + 2 * half, n1 = n0 + 1;  // chunks j0 = 2 half, j1 = 2 half + 1
        const uint32_t row_g = e4m3x2(s[n0][0], s[n0][1]) | (e4m3x2(s[n1][0], s[n1][1]) << 16);
        const uint32_t row_g8 = e4m3x2(s[n0][2], s[n0][3]) | (e4m3x2(s[n1][2], s[n1][3]) << 16);
        const uint32_t first = __byte_perm(row_g, row_g8, pl.send_first);
        const uint32_t second = __byte_perm(row_g, row_g8, pl.send_second);
        const uint32_t x = __shfl_sync(0xffffffffu, first, pl.src_first);
        const uint32_t y = __shfl_sync(0xffffffffu, second, pl.src_second);
        a[2 * half] = __byte_perm(x, y, pl.order_g);
        a[2 * half + 1] = __byte_perm(x, y, pl.order_g8);
    }
}

#endif  // WGMMA_AVAILABLE

// PERSISTENT = false: one block per work tile - queries [128 blockIdx.x, + 128) of head
// blockIdx.y (= b * heads + h); grid: query blocks x batch * heads.
// PERSISTENT = true (ATTENTION_FP8_PERSISTENT, attention_fp8.h): one CTA per SM (the launcher's
// grid: at most the number of work tiles, so that every CTA has one), each looping over its
// work tiles - the same tiles, numbered as block_order.h's natural order (linear = query block
// + query blocks * bh, flash_block_at with group_heads 0) and handed out by its static
// schedule without zig-zag (persistent_work_tile: round r, CTA i takes tile r * ctas + i;
// every tile costs the same, as the FP8 forward is never causal). Per work tile the work is
// the non-persistent block's, in the same order, so the two give the same bits. What carries
// over from one work tile to the next (as in flash_forward_wgmma.cu's persistent kernel):
//   - the K/V ring: its stages and parities follow a running count of K/V tiles over all the
//     CTA's work tiles (the producer's n, the consumers' kv), and the consumers also release
//     the V stage of a work tile's last tile (the non-persistent block never refills it);
//   - Q: one buffer with a full and an empty barrier; use j is work tile j. The consumers
//     release it once their last S of the work tile has landed; the producer loads the next
//     work tile's Q right after that work tile's first K (whose stage frees up earlier), so
//     Q, K and the first V of the next work tile arrive while the consumers finish this one;
//   - the consumers' turns: one round robin over the CTA's whole life (my_turn below).
// BLOCK_N: keys per tile, 128 or 192 (k_tile_bytes above).
template <typename T, int STAGES, bool PERSISTENT, int BLOCK_N>
__global__ void __launch_bounds__(THREADS, 1)
    flash_forward_fp8_kernel(const __grid_constant__ CUtensorMap q_map, const __grid_constant__ CUtensorMap k_map,
                             const __grid_constant__ CUtensorMap vt_map, const __grid_constant__ Fp8Args a) {
#if WGMMA_AVAILABLE
    extern __shared__ unsigned char smem_raw[];
    __shared__ Fp8Barriers bars;
    // The swizzle repeats every 1024 bytes: the tiles start on such a boundary.
    unsigned char *q_tile = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
    static_assert(BLOCK_N == BLOCK_N_NARROW || BLOCK_N == BLOCK_N_WIDE, "128 or 192 keys per tile");
    static_assert(fits_smem(STAGES, BLOCK_N), "shared memory per block");
    constexpr int K_BYTES = k_tile_bytes(BLOCK_N), VT_BYTES = vt_tile_bytes(BLOCK_N);
    unsigned char *k_tiles = q_tile + TILE_BYTES;          // STAGES tiles of K
    unsigned char *v_tiles = k_tiles + STAGES * K_BYTES;   // STAGES tiles of V^T

    const int warpgroup = threadIdx.x / 128, lane = threadIdx.x % 32;
    const int seq = a.seq, tiles = (seq + BLOCK_N - 1) / BLOCK_N;  // tiles of keys per work tile
    // Persistent: this CTA's work tiles, my_work_tiles of them; the j-th is my_work_tile(j).
    const int query_blocks = (seq + BLOCK_M - 1) / BLOCK_M, work_tiles = query_blocks * a.batch * a.heads;
    const int my_work_tiles = PERSISTENT ? persistent_tile_count(blockIdx.x, gridDim.x, work_tiles, 0) : 1;
    auto my_work_tile = [&](int j) -> FlashBlock {
        if constexpr (PERSISTENT) return flash_block_at(persistent_work_tile(j, blockIdx.x, gridDim.x, 0), query_blocks,
                                                        a.batch * a.heads, 0);
        return FlashBlock{(int)blockIdx.x, (int)blockIdx.y};
    };

    if (threadIdx.x == 0) {
        mbarrier_init(&bars.q_full, 1), mbarrier_init(&bars.q_empty, 256);
        for (int s = 0; s < STAGES; s++) {
            mbarrier_init(&bars.k_full[s], 1), mbarrier_init(&bars.v_full[s], 1);
            mbarrier_init(&bars.k_empty[s], 256), mbarrier_init(&bars.v_empty[s], 256);
        }
        fence_shared_for_wgmma();  // the initialised barriers, for the TMA unit
    }
    __syncthreads();

    if (warpgroup == 0) {  // ---- the producer
        warpgroup_release_registers<PRODUCER_REGS>();
        if (threadIdx.x != 0) return;
        int n = 0;  // K/V tiles loaded so far: the ring's running count over all work tiles
        // Q and K: maps of [seq][batch][heads * 128] bytes, boxes of 128 columns (head h) x 128
        // tokens of batch entry b. V^T: [batch * heads][128][seq], boxes of 128 keys x 128 dims.
        // Rows or keys past seq arrive as zeros (and count their bytes all the same).
        auto load_work_tile = [&](const FlashBlock w, const int j) {
            const int bh = w.bh, b = bh / a.heads, h = bh % a.heads, q0 = w.query_block * BLOCK_M;
            // Use j of the Q buffer, once both consumers are done with use j - 1.
            auto load_q = [&]() {
                if (j > 0) mbarrier_wait(&bars.q_empty, (j - 1) & 1);
                mbarrier_arrive_expect_tx(&bars.q_full, TILE_BYTES);
                tma_load_3d(q_tile, &q_map, h * HEAD_DIM, b, q0, &bars.q_full);
            };
            if (j == 0) load_q();  // a later work tile's Q: after its first K (above)
            for (int t = 0; t < tiles; t++, n++) {
                const int s = n % STAGES, use = n / STAGES;  // stage, and how often it was filled before
                if (use > 0) mbarrier_wait(&bars.k_empty[s], (use - 1) & 1);
                mbarrier_arrive_expect_tx(&bars.k_full[s], K_BYTES);
                tma_load_3d(k_tiles + s * K_BYTES, &k_map, h * HEAD_DIM, b, t * BLOCK_N, &bars.k_full[s]);
                if (PERSISTENT && t == 0 && j > 0) load_q();
                if (use > 0) mbarrier_wait(&bars.v_empty[s], (use - 1) & 1);
                mbarrier_arrive_expect_tx(&bars.v_full[s], VT_BYTES);
#pragma unroll
                for (int panel = 0; panel < vt_panels(BLOCK_N); panel++) {  // 128 keys each
                    // A panel that starts at or past seq (192-key tiles: the second panel of a
                    // last tile of at most 128 keys) holds only keys whose P is 0: it is loaded
                    // from the tile's first key instead, so that every box overlaps the tensor
                    // (its values, finite, are multiplied by zeros and add nothing; a box wholly
                    // out of bounds is avoided rather than relied on).
                    // (Panel 0 starts at the tile's first key, < seq.)
                    const int key0 = t * BLOCK_N + 128 * panel;
                    tma_load_3d(v_tiles + s * VT_BYTES + panel * TILE_BYTES, &vt_map,
                                panel == 0 || key0 < seq ? key0 : t * BLOCK_N, 0, bh, &bars.v_full[s]);
                }
            }
        };
#pragma unroll 1
        for (int j = 0; j < my_work_tiles; j++) load_work_tile(my_work_tile(j), j);
        return;
    }

    // ---- the consumers
    warpgroup_claim_registers<CONSUMER_REGS>();
    const int consumer = warpgroup - 1, warp = threadIdx.x / 32 - 4;  // warp 0 .. 7 of the consumers
    const int g = lane / 4;
    // The scores' scale, in the log2 domain, with Q's and K's descales (S is in code units).
    const float scale_log2 = a.softmax_scale * *a.q_scale_inv * *a.k_scale_inv * LOG2E;
    const float v_scale_inv = *a.v_scale_inv;
    const uint32_t q_addr = smem_addr(q_tile) + consumer * 64 * 128;  // this consumer's 64 rows
    const Fp8OperandLanes pl = fp8_operand_lanes(lane);

    // Turns (flash_forward_wgmma.cu's round robin): consumer c issues only in its turn and then
    // hands it to the other. Consumer 1 puts the token in, handing consumer 0 its first turn,
    // and takes it out by skipping the hand-over after its very last turn (of the CTA's last
    // work tile; after an earlier work tile's last turn it hands over as after any other).
    auto my_turn = [&]() { named_barrier_sync(TURNS + consumer, 256); };
    auto your_turn = [&]() { named_barrier_arrive(TURNS + (consumer + 1) % 2, 256); };
    const bool last_consumer = consumer == 1;
    if (last_consumer) your_turn();

    // Work tile w, the CTA's j-th; its K/V tiles are tiles kv, kv + 1, ... of the ring (the
    // producer's n); more_after: the CTA has work tiles after it.
    auto consume_work_tile = [&](const FlashBlock w, const int j, const int kv, const bool more_after) {
        const int bh = w.bh, q0 = w.query_block * BLOCK_M;
        const int row_i[2] = {q0 + 16 * warp + g, q0 + 16 * warp + g + 8};
        float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
        float o[16][4];
#pragma unroll
        for (int n = 0; n < 16; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
        float s[BLOCK_N / 8][4];
        uint32_t p[BLOCK_N / 32][4];  // P as e4m3 A operands, 32 keys each

        // Key tile t of this work tile is tile kv + t of the ring: its stage and its parity.
        auto stage = [&](int t) { return (kv + t) % STAGES; };
        auto parity = [&](int t) { return ((kv + t) / STAGES) & 1; };
        // S = Q K_t^T: 4 steps of 32 dims (32 bytes into the rows; the hardware applies the swizzle).
        auto issue_scores = [&](int t) {
            const uint32_t k_addr = smem_addr(k_tiles + stage(t) * K_BYTES);
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < HEAD_DIM / 32; kk++)
                wgmma_e4m3_ss<BLOCK_N>(s, wgmma_descriptor(q_addr + kk * 32, 0, 1024),
                              wgmma_descriptor(k_addr + kk * 32, 0, 1024), kk > 0);
            wgmma_commit();
        };
        // O += P V_t: BLOCK_N / 32 steps of 32 keys; V^T's rows are the 128 output columns, its
        // keys contiguous, 128 per panel (step kk: panel kk / 4, 32 (kk % 4) bytes into its rows).
        auto issue_output = [&](int t) {
            const uint32_t v_addr = smem_addr(v_tiles + stage(t) * VT_BYTES);
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < BLOCK_N / 32; kk++)
                wgmma_e4m3_rs(o, p[kk], wgmma_descriptor(v_addr + (kk / 4) * TILE_BYTES + (kk % 4) * 32, 0, 1024));
            wgmma_commit();
        };
        // flash_common.cuh's online-softmax step, never causal, with P multiplied by 2^8 (the
        // file's comment).
        auto softmax = [&](int t, float (&alpha)[2]) {
            online_softmax_step<BLOCK_N / 8, ATTENTION_FP8_P_LOG2_SCALE>(s, m, l, alpha, row_i, t * BLOCK_N, seq, 0,
                                                                         scale_log2);
        };
        // P as e4m3 A operands, 32 keys at a time (the file's comment); t unused (no dropout).
        auto pack_probabilities = [&](int /* t */) {
#pragma unroll
            for (int kk = 0; kk < BLOCK_N / 32; kk++) probabilities_to_operand(s, kk, pl, p[kk]);
        };

        // Q first, then the pipeline over the key tiles (flash_forward_common.cuh), with FP8
        // products, the softmax with P times 2^8, and P shuffled into e4m3 operands.
        mbarrier_wait(&bars.q_full, j & 1);
        consume_key_tiles<PERSISTENT>(bars, tiles, stage, parity, my_turn, your_turn, last_consumer, more_after,
                                      issue_scores, issue_output, issue_scores, issue_output, softmax,
                                      pack_probabilities, s, o, p);

        // ctx = acc * v_scale_inv / l; lse = (m + log2 l - 8) ln 2 (l carries P's factor 2^8).
        const float m_out[2] = {m[0] - (float)ATTENTION_FP8_P_LOG2_SCALE, m[1] - (float)ATTENTION_FP8_P_LOG2_SCALE};
        const int64_t token_stride = (int64_t)a.batch * a.heads * HEAD_DIM, head_offset = (int64_t)bh * HEAD_DIM;
        write_output_rows<T>(static_cast<T *>(a.ctx), a.lse + (int64_t)bh * seq, o, m_out, l, row_i, seq,
                             token_stride, head_offset, v_scale_inv);
    };
#pragma unroll 1
    for (int j = 0; j < my_work_tiles; j++) consume_work_tile(my_work_tile(j), j, j * tiles, j + 1 < my_work_tiles);
#else
    (void)q_map, (void)k_map, (void)vt_map, (void)a;
    __trap();
#endif
}

// Whether this image holds the kernel's body (flash_forward_wgmma.cu's probe, for this file:
// the same test in the same translation unit).
__device__ int fp8_image_flag;
__global__ void fp8_image_probe_kernel() { fp8_image_flag = WGMMA_AVAILABLE; }

int fp8_image_loaded() {
    static int loaded = -1;
    if (loaded < 0) {
        fp8_image_probe_kernel<<<1, 1>>>();
        const cudaError_t err = cudaGetLastError();
        if (err == cudaErrorNoKernelImageForDevice) {
            (void)cudaGetLastError();
            loaded = 0;
            return loaded;
        }
        CUDA_CHECK(err);
        CUDA_CHECK(cudaMemcpyFromSymbol(&loaded, fp8_image_flag, sizeof loaded));
    }
    return loaded;
}

// A TMA map of bytes: dims[0] x dims[1] x dims[2] (dims[0] contiguous), strides in bytes of
// dims 1 and 2, boxes of 128 x box1 x box2, written to shared memory with the 128-byte swizzle;
// out-of-range elements read as zeros.
CUtensorMap byte_tensor_map(const void *base, const cuuint64_t (&dims)[3], const cuuint64_t (&strides)[2],
                            cuuint32_t box1, cuuint32_t box2, const char *what) {
    CUtensorMap map;
    const cuuint32_t box[3] = {128, box1, box2}, element_strides[3] = {1, 1, 1};
    const CUresult r = tensor_map_encoder()(&map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 3, const_cast<void *>(base), dims,
                                            strides, box, element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                            CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) fail_user("FP8 attention: cannot describe %s for the TMA (error %d)", what, (int)r);
    return map;
}

// The settings (attention_fp8.h), each an environment variable read once, at the first use or
// setter call (env_switch.h). The defaults are what measured fastest on an H200
// (docs/results.md#h200-ninth): 192-key tiles, persistent CTAs, a ring of 2 stages.
const EnvChoice stages_choices[] = {{"2", 2}, {"3", 3}, {"4", 4}};
Switch stages_switch = SWITCH("ATTENTION_FP8_STAGES", stages_choices, 2);
const EnvChoice persistent_choices[] = {{"1", 1}, {"0", 0}};
Switch persistent_switch = SWITCH("ATTENTION_FP8_PERSISTENT", persistent_choices, 1);
const EnvChoice block_n_choices[] = {{"192", BLOCK_N_WIDE}, {"128", BLOCK_N_NARROW}};
Switch block_n_switch = SWITCH("ATTENTION_FP8_BLOCK_N", block_n_choices, BLOCK_N_WIDE);

int fp8_stages() { return switch_value(stages_switch); }
int fp8_persistent() { return switch_value(persistent_switch); }
int fp8_block_n() { return switch_value(block_n_switch); }
// The one combination of the settings that does not fit: 4 stages of 192-key tiles (241 KiB).
constexpr const char *FP8_STAGES_REFUSAL =
    "FP8 attention: ATTENTION_FP8_STAGES=4 needs 128-key tiles (ATTENTION_FP8_BLOCK_N=128): 192-key tiles (the "
    "default) fit 2 or 3 stages in shared memory, not 4";

template <typename T, int STAGES, bool PERSISTENT, int BLOCK_N>
void launch_fp8_forward(const AttentionFp8Problem *p, const uint8_t *q, const uint8_t *k, const uint8_t *vt,
                        const Fp8Args &a) {
    allow_dynamic_smem<flash_forward_fp8_kernel<T, STAGES, PERSISTENT, BLOCK_N>>(smem_bytes(STAGES, BLOCK_N));
    const cuuint64_t row = (cuuint64_t)p->heads * HEAD_DIM, vt_row = (cuuint64_t)attention_fp8_vt_row_stride(p);
    const cuuint64_t qk_dims[3] = {row, (cuuint64_t)p->batch, (cuuint64_t)p->seq};
    const cuuint64_t qk_strides[2] = {row, row * p->batch};
    const cuuint64_t vt_dims[3] = {(cuuint64_t)p->seq, HEAD_DIM, (cuuint64_t)p->batch * p->heads};
    const cuuint64_t vt_strides[2] = {vt_row, vt_row * HEAD_DIM};
    const CUtensorMap q_map = byte_tensor_map(q, qk_dims, qk_strides, 1, BLOCK_M, "q");
    const CUtensorMap k_map = byte_tensor_map(k, qk_dims, qk_strides, 1, BLOCK_N, "k");
    const CUtensorMap vt_map = byte_tensor_map(vt, vt_dims, vt_strides, HEAD_DIM, 1, "vt");
    const int query_blocks = ceil_div(p->seq, BLOCK_M);
    const dim3 grid = PERSISTENT ? dim3(flash_persistent_grid(query_blocks * p->batch * p->heads, INT_MAX))
                                 : dim3(query_blocks, p->batch * p->heads);
    flash_forward_fp8_kernel<T, STAGES, PERSISTENT, BLOCK_N>
        <<<grid, THREADS, smem_bytes(STAGES, BLOCK_N)>>>(q_map, k_map, vt_map, a);
    CHECK_LAUNCH();
}

// launch_fp8_forward for the persistence asked for.
template <typename T, int STAGES, int BLOCK_N>
void launch_fp8_forward_persistent_as_set(const AttentionFp8Problem *p, const uint8_t *q, const uint8_t *k,
                                          const uint8_t *vt, const Fp8Args &a) {
    if (fp8_persistent()) launch_fp8_forward<T, STAGES, true, BLOCK_N>(p, q, k, vt, a);
    else launch_fp8_forward<T, STAGES, false, BLOCK_N>(p, q, k, vt, a);
}

// launch_fp8_forward for the tile width, ring depth and persistence asked for.
template <typename T>
void launch_fp8_forward_as_set(const AttentionFp8Problem *p, const uint8_t *q, const uint8_t *k, const uint8_t *vt,
                               const Fp8Args &a) {
    const int stages = fp8_stages();  // with the tile width, checked by attention_forward_fp8
    if (fp8_block_n() == BLOCK_N_WIDE) {
        if (stages == 2) launch_fp8_forward_persistent_as_set<T, 2, BLOCK_N_WIDE>(p, q, k, vt, a);
        else launch_fp8_forward_persistent_as_set<T, 3, BLOCK_N_WIDE>(p, q, k, vt, a);
        return;
    }
    switch (stages) {
    case 2: launch_fp8_forward_persistent_as_set<T, 2, BLOCK_N_NARROW>(p, q, k, vt, a); break;
    case 3: launch_fp8_forward_persistent_as_set<T, 3, BLOCK_N_NARROW>(p, q, k, vt, a); break;
    default: launch_fp8_forward_persistent_as_set<T, 4, BLOCK_N_NARROW>(p, q, k, vt, a); break;
    }
}

}  // namespace

int64_t attention_fp8_vt_row_stride(const AttentionFp8Problem *p) {
    return p->vt_row_stride ? p->vt_row_stride : ((int64_t)p->seq + 15) / 16 * 16;
}

const char *attention_fp8_unsupported(const AttentionFp8Problem *p) {
    if (p->head_dim != HEAD_DIM) return "FP8 attention: head_dim must be 128";
    if (p->causal) return "FP8 attention: the causal mask is not supported (causal must be 0)";
    if (p->dtype != DTYPE_FP16 && p->dtype != DTYPE_BF16) return "FP8 attention: dtype (ctx's) must be fp16 or bf16";
    if (p->seq < 1 || p->batch < 1 || p->heads < 1) return "FP8 attention: seq, batch and heads must be >= 1";
    if ((int64_t)p->batch * p->heads > 65535) return "FP8 attention: batch * heads must be at most 65535";
    const int64_t vt_row = attention_fp8_vt_row_stride(p);
    if (vt_row < p->seq || vt_row % 16 != 0)
        return "FP8 attention: vt_row_stride must be >= seq and a multiple of 16 (or 0: seq rounded up to 16)";
    return NULL;
}

const char *attention_fp8_settings_unsupported(void) {
    (void)fp8_persistent();  // read now too: a bad value stops here, with the others
    return attention_fp8_block_n_fits(fp8_block_n()) ? NULL : FP8_STAGES_REFUSAL;
}

int attention_fp8_block_n_fits(int block_n) {
    if (block_n != BLOCK_N_NARROW && block_n != BLOCK_N_WIDE)
        fail_user("attention_fp8_block_n_fits: block_n must be 128 or 192, not %d", block_n);
    return fits_smem(fp8_stages(), block_n);
}

int attention_fp8_available(void) {
    gpu_require();
    return gpu_arch_has_wgmma(gpu_effective_cc()) && fp8_image_loaded();
}

void attention_forward_fp8(const AttentionFp8Problem *p, const uint8_t *q, const uint8_t *k, const uint8_t *vt,
                           const float *q_scale_inv, const float *k_scale_inv, const float *v_scale_inv, void *ctx,
                           float *lse) {
    const char *why = attention_fp8_unsupported(p);
    if (!why) why = attention_fp8_settings_unsupported();
    if (why) fail_user("%s", why);
    if (!q || !k || !vt || !q_scale_inv || !k_scale_inv || !v_scale_inv || !ctx || !lse)
        fail_user("FP8 attention: a pointer argument is NULL");
    if (!aligned16(q) || !aligned16(k) || !aligned16(vt) || !aligned16(ctx) || !aligned16(lse))
        fail_user("FP8 attention: q, k, vt, ctx and lse must be 16-byte aligned");
    if (!attention_fp8_available()) {
        const int cc = gpu_effective_cc();
        fail_user("FP8 attention needs Hopper's wgmma (compute capability 9.0, and a build with sm_90a code); this "
                  "GPU is %d.%d%s",
                  cc / 10, cc % 10, gpu_arch_has_wgmma(cc) ? " but this build holds no sm_90a code" : "");
    }
    const Fp8Args a = {p->seq,      p->batch,    p->heads,    ctx, lse, q_scale_inv, k_scale_inv, v_scale_inv,
                       1.0f / sqrtf((float)HEAD_DIM)};
    if (p->dtype == DTYPE_FP16) launch_fp8_forward_as_set<__half>(p, q, k, vt, a);
    else launch_fp8_forward_as_set<__nv_bfloat16>(p, q, k, vt, a);
}

int attention_fp8_set_persistent(int persistent) {
    if (persistent != 0 && persistent != 1)
        fail_user("attention_fp8_set_persistent: persistent must be 0 or 1, not %d", persistent);
    return switch_set(persistent_switch, persistent);
}

int attention_fp8_set_block_n(int block_n) {
    if (block_n != BLOCK_N_NARROW && block_n != BLOCK_N_WIDE)
        fail_user("attention_fp8_set_block_n: block_n must be 128 or 192, not %d", block_n);
    return switch_set(block_n_switch, block_n);
}
