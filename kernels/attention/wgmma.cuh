// Hopper's warpgroup matrix multiply (wgmma), as thin wrappers over PTX.
//
// A warpgroup - 4 consecutive warps, 128 threads - computes D[64 x N] (+)= A[64 x 16] *
// B[16 x N] in one instruction, asynchronously: wgmmas are issued, grouped by
// wgmma_commit(), and wgmma_wait<n>() blocks until at most n groups are still running. B
// (and A, when it is not in registers) is read by the tensor cores straight from shared
// memory, described by a 64-bit "matrix descriptor"; nothing passes through the threads'
// registers, which is what lets Hopper's tensor cores run at twice mma.sync's rate.
//
// Fragments (warp w of the group, g = lane / 4, c = lane % 4), the same per warp as
// mma.sync's (mma.cuh), which is what lets a score accumulator become an A operand:
//   D (float): d[n][0], d[n][1] = D[16w + g][8n + 2c, +1]; d[n][2], d[n][3] = row 16w + g + 8
//   A (16-bit, in registers): mma.sync's A fragment of rows [16w, 16w + 16)
//
// Shared-memory layout used here ("128-byte swizzle"): a tile is stored as panels of 64
// 16-bit columns (128 bytes per row); in each panel, 16-byte chunk k of row r sits at chunk
// k ^ (r % 8) of the row, so that the 8 rows of an 8 x 8 core matrix fall in different
// banks. Panels start at 1024-byte boundaries (8 rows, one swizzle period).
#ifndef KERNELS_ATTENTION_WGMMA_CUH
#define KERNELS_ATTENTION_WGMMA_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

// wgmma exists only in code compiled for sm_90a. For other targets (a build with
// CUDA_ARCHS=89, say, or the PTX of an older target JIT-compiled on a Hopper GPU) the wgmma
// kernels compile to a trap: they are never launched there, since attention.cu asks a probe
// compiled the same way (flash_wgmma_image_loaded) before it chooses them.
#if !defined(__CUDA_ARCH__) || defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define WGMMA_AVAILABLE 1
#else
#define WGMMA_AVAILABLE 0
#endif

// Byte offset of (row, 16-byte chunk) in a swizzled panel of 128-byte rows (the same layout in
// plain C, with the reasons and tests: reference/swizzle.h, the "swizzle" exercise).
__device__ __forceinline__ uint32_t swizzled_offset(int row, int chunk) {
    return (uint32_t)(row * 128 + ((chunk ^ (row % 8)) * 16));
}

// A float tile staged for TMA reductions or stores (the backwards' dQ, boxes of 64 rows x 32
// floats, tensor_map_float_rows): panels of 64 rows x 32 floats (128 bytes a row, the same
// 128-byte swizzle), panel p holding columns [32 p, 32 p + 32). Byte offset of (row, col),
// row < 64. A warp's 8-byte stores of one accumulator step (8 rows x 4 column pairs) land in
// 16-byte chunks that the swizzle spreads over the banks.
constexpr int DQ_STAGE_PANEL = 64 * 128;
__device__ __forceinline__ uint32_t dq_stage_offset(int row, int col) {
    return (uint32_t)((col / 32) * DQ_STAGE_PANEL) + swizzled_offset(row, (col % 32) / 4) + 4 * (col % 4);
}

// The descriptor of a swizzled operand whose first element is at shared address `addr`.
// K-major (the reduction dimension contiguous, like Q and K): stride = 1024, the step from
// one 8-row group to the next; `leading` is unused. MN-major (like V, whose rows are keys,
// the reduction dimension of P V): leading = the step from one 64-column panel to the next,
// stride = 1024, the step from one group of 8 keys to the next.
__device__ __forceinline__ uint64_t wgmma_descriptor(uint32_t addr, uint32_t leading, uint32_t stride) {
    uint64_t desc = (uint64_t)((addr & 0x3FFFF) >> 4);
    desc |= (uint64_t)((leading & 0x3FFFF) >> 4) << 16;
    desc |= (uint64_t)((stride & 0x3FFFF) >> 4) << 32;
    desc |= (uint64_t)1 << 62;  // 128-byte swizzle
    return desc;
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

// Shared memory written by ordinary stores (or cp.async) must be made visible to the "async
// proxy" - the tensor cores of a wgmma, the TMA unit of a bulk copy - before those read it.
__device__ __forceinline__ void fence_shared_for_wgmma() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// A barrier for the 128 threads of one warpgroup (ids 1 and 2; 0 is __syncthreads').
__device__ __forceinline__ void warpgroup_barrier(int warpgroup) {
    asm volatile("bar.sync %0, 128;\n" ::"r"(1 + warpgroup) : "memory");
}

// The compiler does not know that a wgmma writes its accumulators later, at wgmma_wait: this
// empty asm, placed after the wait, keeps it from reading them any earlier.
template <int NB>
__device__ __forceinline__ void wgmma_settle(float (&d)[NB][4]) {
#pragma unroll
    for (int n = 0; n < NB; n++)
        asm volatile("" : "+f"(d[n][0]), "+f"(d[n][1]), "+f"(d[n][2]), "+f"(d[n][3])::"memory");
}

// The same for A operands in registers: the compiler must not reuse them while the wgmma
// that reads them is still running.
template <int NK>
__device__ __forceinline__ void wgmma_settle(uint32_t (&a)[NK][4]) {
#pragma unroll
    for (int k = 0; k < NK; k++) asm volatile("" : "+r"(a[k][0]), "+r"(a[k][1]), "+r"(a[k][2]), "+r"(a[k][3])::"memory");
}

// The accumulator operand lists: N / 2 floats per thread (N = 64: 32, N = 80: 40, N = 112: 56,
// N = 128: 64, N = 176: 88).
#define WG_ACC4(n) "+f"(d[n][0]), "+f"(d[n][1]), "+f"(d[n][2]), "+f"(d[n][3])
#define WG_ACC32 WG_ACC4(0), WG_ACC4(1), WG_ACC4(2), WG_ACC4(3), WG_ACC4(4), WG_ACC4(5), WG_ACC4(6), WG_ACC4(7)
#define WG_ACC40 WG_ACC32, WG_ACC4(8), WG_ACC4(9)
#define WG_ACC56 WG_ACC32, WG_ACC4(8), WG_ACC4(9), WG_ACC4(10), WG_ACC4(11), WG_ACC4(12), WG_ACC4(13)
#define WG_ACC64                                                                                              \
    WG_ACC32, WG_ACC4(8), WG_ACC4(9), WG_ACC4(10), WG_ACC4(11), WG_ACC4(12), WG_ACC4(13), WG_ACC4(14), \
        WG_ACC4(15)
#define WG_ACC88                                                                                              \
    WG_ACC64, WG_ACC4(16), WG_ACC4(17), WG_ACC4(18), WG_ACC4(19), WG_ACC4(20), WG_ACC4(21)
#define WG_REGS32                                                                                            \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, " \
    "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define WG_REGS40                                                                                            \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, " \
    "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39}"
#define WG_REGS56                                                                                            \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, " \
    "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, "  \
    "%42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55}"
#define WG_REGS64                                                                                             \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, "  \
    "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, "   \
    "%42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, "   \
    "%62, %63}"
#define WG_REGS88                                                                                             \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, "   \
    "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, "    \
    "%42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, "    \
    "%62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, "    \
    "%82, %83, %84, %85, %86, %87}"

// The first NB_PART column blocks (8 columns each) of an NB-block accumulator: what a product
// narrower than the accumulator writes (flash_forward_wgmma.cu's last key tile of a row).
template <int NB_PART, int NB>
__device__ __forceinline__ float (&leading_column_blocks(float (&d)[NB][4]))[NB_PART][4] {
    static_assert(NB_PART <= NB, "a part of the accumulator");
    return *reinterpret_cast<float(*)[NB_PART][4]>(&d);
}

// D[64 x N] += A B (D = A B when accumulate is 0: D need not be initialised), A and B in
// shared memory, each K-major (TRANS = 0: the reduction dimension contiguous) or MN-major
// (TRANS = 1, "transposed").
template <typename T, int N, int TRANS_A = 0, int TRANS_B = 0>
__device__ __forceinline__ void wgmma_ss(float (&d)[N / 8][4], uint64_t a_desc, uint64_t b_desc, int accumulate = 1);

// D[64 x N] += A B, A in registers, B in shared memory MN-major ("transposed B").
template <typename T, int N>
__device__ __forceinline__ void wgmma_rs_mn(float (&d)[N / 8][4], const uint32_t (&a)[4], uint64_t b_desc);

// The definitions for each type, N and layout. PTX names operands by number: the
// accumulators are %0 .. %(N/2 - 1) and the other operands follow (A, B, and the
// "accumulate" predicate's source), so their numbers are spelled out.
#define WG_DEFINE_SS(TYPE, PTX_TYPE, N, TA, TB, REGS, ACC, A, B, FLAG)                                      \
    template <>                                                                                          \
    __device__ __forceinline__ void wgmma_ss<TYPE, N, TA, TB>(float (&d)[N / 8][4], uint64_t a_desc,       \
                                                              uint64_t b_desc, int accumulate) {         \
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " FLAG ", 0;\n"                                   \
                     "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." PTX_TYPE "." PTX_TYPE " " REGS      \
                     ", " A ", " B ", p, 1, 1, " #TA ", " #TB ";\n}\n"                                     \
                     : ACC                                                                               \
                     : "l"(a_desc), "l"(b_desc), "r"(accumulate));                                                \
    }

#define WG_DEFINE_RS_MN(TYPE, PTX_TYPE, N, REGS, ACC, A, B, FLAG)                                          \
    template <>                                                                                          \
    __device__ __forceinline__ void wgmma_rs_mn<TYPE, N>(float (&d)[N / 8][4], const uint32_t (&a)[4],     \
                                                         uint64_t b_desc) {                              \
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " FLAG ", 0;\n"                                   \
                     "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." PTX_TYPE "." PTX_TYPE " " REGS      \
                     ", " A ", " B ", p, 1, 1, 1;\n}\n"                                                   \
                     : ACC                                                                               \
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_desc), "r"(1));                 \
    }

// Forward: S = Q K^T (N = 128 keys, or 176: the wide tiles at d 128, whose last tile of a row
// may be 112 or 64 keys wide: flash_forward_wgmma.cu's LAST_N), O += P V (N = d).
#define WG_DEFINE_ALL(TYPE, PTX_TYPE)                                                                       \
    WG_DEFINE_SS(TYPE, PTX_TYPE, 128, 0, 0, WG_REGS64, WG_ACC64, "%64", "%65", "%66")                        \
    WG_DEFINE_SS(TYPE, PTX_TYPE, 176, 0, 0, WG_REGS88, WG_ACC88, "%88", "%89", "%90")                        \
    WG_DEFINE_SS(TYPE, PTX_TYPE, 112, 0, 0, WG_REGS56, WG_ACC56, "%56", "%57", "%58")                        \
    WG_DEFINE_RS_MN(TYPE, PTX_TYPE, 128, WG_REGS64, WG_ACC64, "{%64, %65, %66, %67}", "%68", "%69")          \
    WG_DEFINE_RS_MN(TYPE, PTX_TYPE, 64, WG_REGS32, WG_ACC32, "{%32, %33, %34, %35}", "%36", "%37")           \
    /* Backward: S, dP (N = 64 keys); dV, dK (A, B transposed; N = d: 128, 64); dQ (B transposed). */ \
    WG_DEFINE_SS(TYPE, PTX_TYPE, 64, 0, 0, WG_REGS32, WG_ACC32, "%32", "%33", "%34")                         \
    WG_DEFINE_SS(TYPE, PTX_TYPE, 128, 1, 1, WG_REGS64, WG_ACC64, "%64", "%65", "%66")                        \
    WG_DEFINE_SS(TYPE, PTX_TYPE, 64, 1, 1, WG_REGS32, WG_ACC32, "%32", "%33", "%34")                         \
    WG_DEFINE_SS(TYPE, PTX_TYPE, 64, 0, 1, WG_REGS32, WG_ACC32, "%32", "%33", "%34")                         \
    /* The 80-query backward (flash_backward_ws_swapab.cu): S^T, dP^T (N = 80 queries, both          \
       K-major) and dQ^T (A = K read MN-major, B = dS K-major). */                                    \
    WG_DEFINE_SS(TYPE, PTX_TYPE, 80, 0, 0, WG_REGS40, WG_ACC40, "%40", "%41", "%42")                         \
    WG_DEFINE_SS(TYPE, PTX_TYPE, 80, 1, 0, WG_REGS40, WG_ACC40, "%40", "%41", "%42")                         \
    /* ... and its causal tiles of 64 queries: dQ^T. */                                               \
    WG_DEFINE_SS(TYPE, PTX_TYPE, 64, 1, 0, WG_REGS32, WG_ACC32, "%32", "%33", "%34")

WG_DEFINE_ALL(__half, "f16")
WG_DEFINE_ALL(__nv_bfloat16, "bf16")

#undef WG_DEFINE_ALL
#undef WG_DEFINE_SS
#undef WG_DEFINE_RS_MN
#undef WG_ACC4
#undef WG_ACC32
#undef WG_ACC40
#undef WG_ACC56
#undef WG_ACC64
#undef WG_ACC88
#undef WG_REGS32
#undef WG_REGS40
#undef WG_REGS56
#undef WG_REGS64
#undef WG_REGS88

// The backward's two score products of one query tile, shared by flash_backward_wgmma.cu and
// flash_backward_ws.cu: S = Q K_w^T and dP = dO V_w^T, 64 queries x the 64 keys of one
// warpgroup, K = D in steps of 16 columns, as two commit groups (S's first, so that a
// wgmma_wait<1> waits for S alone). Q and dO are panels of 64 columns `qo_panel` bytes apart, K
// and V panels `kv_panel` apart; the warpgroup's keys start `key_offset` bytes into K's and V's.
// One of them: acc (64 rows x 64 keys) = A B^T, A's rows at a_addr, B's at b_addr + key_offset,
// both reduced over D columns, one commit group.
template <typename T, int D>
__device__ __forceinline__ void wgmma_backward_score_product(float (&acc)[8][4], uint32_t a_addr, uint32_t b_addr,
                                                             uint32_t key_offset, uint32_t qo_panel,
                                                             uint32_t kv_panel) {
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
        const uint32_t qo = (kk / 4) * qo_panel + (kk % 4) * 32;
        const uint32_t kv = (kk / 4) * kv_panel + key_offset + (kk % 4) * 32;
        wgmma_ss<T, 64>(acc, wgmma_descriptor(a_addr + qo, 0, 1024), wgmma_descriptor(b_addr + kv, 0, 1024), kk > 0);
    }
    wgmma_commit();
}

template <typename T, int D>
__device__ __forceinline__ void wgmma_backward_scores(float (&s)[8][4], float (&dp)[8][4], uint32_t q_addr,
                                                      uint32_t do_addr, uint32_t k_addr, uint32_t v_addr,
                                                      uint32_t key_offset, uint32_t qo_panel, uint32_t kv_panel) {
    wgmma_fence();
    wgmma_backward_score_product<T, D>(s, q_addr, k_addr, key_offset, qo_panel, kv_panel);    // S = Q K_w^T
    wgmma_backward_score_product<T, D>(dp, do_addr, v_addr, key_offset, qo_panel, kv_panel);  // dP = dO V_w^T
}

// The backward's products into dV and dK of one query tile, shared likewise: acc (64 keys x D)
// += A^T B over the tile's 64 queries, A = a warpgroup's [query][key] panel of Pd or dS (64 x
// 64, keys contiguous) at a_addr read transposed, B = the tile's dO or Q (64 queries x D,
// 64-column panels b_leading bytes apart) at b_addr read transposed; step kk takes 16
// queries, 16 rows (2048 bytes) further in both. a_leading is A's descriptor's leading offset.
// Issued only: the caller fences, commits and waits.
template <typename T, int D>
__device__ __forceinline__ void wgmma_backward_key_update(float (&acc)[D / 8][4], uint32_t a_addr, uint32_t a_leading,
                                                          uint32_t b_addr, uint32_t b_leading) {
#pragma unroll
    for (int kk = 0; kk < 64 / 16; kk++)
        wgmma_ss<T, D, 1, 1>(acc, wgmma_descriptor(a_addr + kk * 2048, a_leading, 1024),
                             wgmma_descriptor(b_addr + kk * 2048, b_leading, 1024));
}

#endif  // KERNELS_ATTENTION_WGMMA_CUH
