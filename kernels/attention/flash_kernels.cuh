// The attention kernels as the dispatch (attention.cu) sees them: what a launch is given,
// each kernel's launcher and the shared memory it needs. Callers use attention.h; this header
// is the line between the dispatch and the kernel files (flash_mma.cu for mma.sync,
// flash_forward_wgmma.cu, flash_backward_wgmma.cu and flash_backward_swapab.cu for Hopper).
#ifndef KERNELS_ATTENTION_FLASH_KERNELS_CUH
#define KERNELS_ATTENTION_FLASH_KERNELS_CUH

#include <stddef.h>
#include <stdint.h>

#include "common/gpu/cuda_check.h"
#include "kernels/attention/attention.h"
#include "kernels/attention/flash_common.cuh"

// The grid of a persistent kernel: one CTA per SM of the current GPU (each of these kernels
// fills an SM with one CTA: its shared memory or its threads), at most `cap` (tests: a few
// CTAs, so that each runs several work items), never more than there are work items (every CTA
// needs at least one). Host code.
inline int flash_persistent_grid(int work_items, int cap) {
    int device = 0, sms = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    const int ctas = sms < cap ? sms : cap;
    return ctas < work_items ? ctas : work_items;
}

// What every attention launch shares: the shape, the row strides of qkv and of ctx / dctx in
// elements (batch * qkv_row and batch * ctx_row between tokens, see attention.h), the causal
// mask and dropout (probability, the seed's round keys, the step's offset, which heads).
struct FlashParams {
    int seq, batch, heads;
    int64_t qkv_row, ctx_row;
    float p_drop;
    int causal;
    PhiloxKeys keys;  // the dropout seed's round keys (philox_keys)
    uint64_t offset;
    HeadRange drop;
};

// A forward launch: q, k, v read from qkv, ctx written, lse [batch, heads, seq] saved.
struct FwdArgs : FlashParams {
    const void *qkv;
    void *ctx;
    float *lse;
};

// A backward launch: q, k, v from qkv and dO from dctx as in the forward, lse from the
// forward, dsum = rowsum(dO * O) per query, dq_accum the (zeroed) float accumulator of dQ
// ([batch * heads][seq][D]) that every block of keys adds its share into; writes dK and dV
// into dqkv (its dQ part is left to flash_backward_write_dq). deterministic = 1: dq_accum is
// instead one such accumulator per block of keys ([key block][batch * heads][seq][D], not
// zeroed), into which block kb stores its share of the rows it visits - plain stores, no
// additions - for flash_backward_sum_dq_slices to add up in a fixed order.
// tile_stats (the swapAB and the warp-specialised backwards only, else NULL): the prepare pass's per-query lse * log2(e)
// and Dsum, padded (flash_tile_stats_floats, below).
struct BwdArgs : FlashParams {
    const void *qkv, *dctx;
    const float *lse, *dsum;
    float *dq_accum;
    void *dqkv;
    int deterministic;
    const float *tile_stats;
};

// The swapAB backward's per-query statistics, which each of its query tiles copies into shared
// memory with two bulk copies: lse[i] * log2(e) as [batch * heads][stats_row] floats, then
// Dsum[i] likewise, stats_row = seq rounded up to FLASH_TILE_STATS_QUERIES (every query
// tile's copy, at most 128 queries from a multiple of its size, stays inside the row; the rows
// start 16-byte aligned, as bulk copies need). The padding holds zeros.
constexpr int FLASH_TILE_STATS_QUERIES = 128;
// The 80-query backward (flash_backward_ws_swapab.cu) reads 80 floats from a multiple of 80, so
// the row is seq rounded up to a multiple of 128 or of 80, whichever is longer (both multiples of
// 16 bytes).
constexpr int FLASH_TILE_STATS_QUERIES_80 = 80;
__host__ __device__ inline int flash_tile_stats_row(int seq) {
    const int by128 = (seq + FLASH_TILE_STATS_QUERIES - 1) / FLASH_TILE_STATS_QUERIES * FLASH_TILE_STATS_QUERIES;
    const int by80 = (seq + FLASH_TILE_STATS_QUERIES_80 - 1) / FLASH_TILE_STATS_QUERIES_80 * FLASH_TILE_STATS_QUERIES_80;
    return by128 > by80 ? by128 : by80;
}
inline size_t flash_tile_stats_floats(int seq, int batch, int heads) {
    return 2 * (size_t)flash_tile_stats_row(seq) * batch * heads;
}

// Raises KERNEL's dynamic shared-memory limit to `bytes` on its first launch (CUDA's default is
// 48 KiB per block; every kernel here needs more, up to Hopper's 227 KiB). KERNEL is a template
// parameter, so each kernel instantiation keeps its own flag.
template <auto KERNEL>
inline void allow_dynamic_smem(size_t bytes) {
    static bool done = false;
    if (!done) {
        CUDA_CHECK(cudaFuncSetAttribute(KERNEL, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
        done = true;
    }
}

// In every launcher below T is __half or __nv_bfloat16 and D the head dim, 64 or 128. Each
// sets its kernel's shared-memory limit on first use; the dispatch has checked that the
// bytes fit the GPU.

// ---- flash_mma.cu: mma.sync, any GPU since Ampere --------------------------------------------
// Forward with 2 K/V stages (the next tile's copy overlaps this one's products) or 1 (K's
// and V's copies overlap the other's products: less shared memory).
size_t flash_forward_mma_smem_bytes(int head_dim, int kv_stages);
template <typename T, int D>
void flash_forward_mma(const FwdArgs &a, int kv_stages);

// Backward (dK, dV, dQ's partial sums) with 128 or 64 keys per block (128: at d = 128 only).
size_t flash_backward_mma_smem_bytes(int head_dim, int block_keys);
template <typename T, int D>
void flash_backward_mma(const BwdArgs &a, int block_keys);

// The passes around every backward kernel: first dsum = rowsum(dO * O) per query
// ([batch, heads, seq]) and dQ's float accumulator ([batch, heads, seq, D]) set to zero (not
// when dq_accum is NULL: the deterministic slices need no zeroing), and, when tile_stats is
// not NULL (the swapAB backward), the padded statistics above from lse and Dsum; last dQ from
// the accumulator into dqkv's q slots.
template <typename T, int D>
void flash_backward_prepare(const FlashParams &p, const void *ctx, const void *dctx, float *dsum, float *dq_accum,
                            const float *lse, float *tile_stats);
template <typename T, int D>
void flash_backward_write_dq(const FlashParams &p, const float *dq_accum, void *dqkv);
// The deterministic backward's last pass: dQ = the sum of the key blocks' slices
// (BwdArgs.deterministic), added in key-block order 0, 1, 2, ... (only the blocks that wrote
// the row: when causal, those that start at or before it), into dqkv's q slots.
template <typename T, int D>
void flash_backward_sum_dq_slices(const FlashParams &p, const float *dq_slices, int block_keys, void *dqkv);

// ---- flash_forward_wgmma.cu, flash_backward_wgmma.cu: Hopper (sm_90a) ------------------------
// 1 if the code running on this GPU holds the wgmma kernels' bodies (they were compiled for
// sm_90a and the driver loaded that image), else 0. Launches a one-thread probe once.
int flash_wgmma_image_loaded(void);

// Forward with `consumers` consumer warpgroups of 64 queries each: 2 (both head dims) or 3
// (head dim 64 only; any other pair stops with a message). When causal, the query blocks run
// in causal_order (attention.h, block_order.h); without the mask, in the natural order.
// persistent_ctas 0: one block per 64 * consumers queries of a head; > 0: the persistent
// kernel (ATTENTION_FORWARD_PERSISTENT, attention.h) with at most that many CTAs (and at most
// one per SM), where it exists: flash_forward_wgmma_has_persistent (1 or 0) says whether it
// does for `consumers` and dropping (p > 0) or not; where not, the non-persistent kernel runs.
// dynamic_schedule 1: the persistent CTAs take their work tiles from a global counter as they
// get ready for one; 0: each a fixed list (ATTENTION_PERSISTENT_SCHEDULE, attention.h).
// block_n: keys per K/V tile, 128, or 176 (ATTENTION_FORWARD_BLOCK_N, attention.h) at head dim
// 128 with 2 consumers, neither causal nor dropping only (anything else stops with a message).
// flash_forward_wgmma_smem_bytes: the dynamic shared memory per block of that kernel.
size_t flash_forward_wgmma_smem_bytes(int head_dim, int consumers, int block_n);
int flash_forward_wgmma_has_persistent(int consumers, int dropping);
template <typename T, int D>
void flash_forward_wgmma(const FwdArgs &a, int consumers, int block_n, AttentionCausalOrder causal_order,
                         int persistent_ctas, int dynamic_schedule);

// Backward (dK, dV, dQ's partial sums), 128 keys per block, two warpgroups of 64 keys each.
// At head dim 64, dQ of a query tile is computed either by each warpgroup over its own 64 keys
// (OWN_KEYS: both shares added into dQ) or by the warpgroups in turns over all 128 (BY_TURNS:
// half the additions, a barrier between the warpgroups before dQ); head dim 128 has one way
// and ignores dq64. Deterministic, the kernel writes one dQ slice per
// flash_backward_wgmma_slice_keys keys: 64 for OWN_KEYS (a warpgroup's), else 128 (a block's) -
// the block_keys that flash_backward_sum_dq_slices must be given. When causal, key blocks run
// in causal_order (heavy first: block_order.h's grouped order; the others: each head's key
// blocks in ascending order, which there is heaviest first already).
typedef enum { FLASH_DQ64_OWN_KEYS, FLASH_DQ64_BY_TURNS } FlashDq64;
size_t flash_backward_wgmma_smem_bytes(int head_dim);
int flash_backward_wgmma_slice_keys(int head_dim, FlashDq64 dq64);
template <typename T, int D>
void flash_backward_wgmma(const BwdArgs &a, FlashDq64 dq64, AttentionCausalOrder causal_order);

// The swapAB backward (flash_backward_swapab.cu; ATTENTION_BACKWARD_SWAPAB, attention.h): the
// scores computed transposed, keys as the wgmma M dimension, so that dV and dK take P and dS
// from registers. 128 keys per block, 128 queries per step at head dim 64, 64 at 128. Needs
// a.tile_stats (flash_backward_prepare's). Dropout (a.p_drop > 0) with the forward's mask, as
// the other backwards. Deterministic, one dQ slice per 128 keys
// (flash_backward_swapab_slice_keys). Key blocks in causal_order as flash_backward_wgmma's.
// Persistent (persistent_ctas > 0, at most that many CTAs, one per SM; 0: one CTA per block)
// where flash_backward_swapab_runs_persistent says: head dim 64 without the causal mask or the
// deterministic dQ (the same bits either way).
size_t flash_backward_swapab_smem_bytes(int head_dim);  // the most a launch of it takes
int flash_backward_swapab_slice_keys(void);
int flash_backward_swapab_runs_persistent(int head_dim, int causal, int deterministic);
template <typename T, int D>
void flash_backward_swapab(const BwdArgs &a, AttentionCausalOrder causal_order, int persistent_ctas);

// The warp-specialised backward at head dim 128 (flash_backward_ws.cu; ATTENTION_BACKWARD_WS,
// attention.h): flash_backward_wgmma.cu's math in two consumer warpgroups of 240 registers
// beside a producer warpgroup (the copies, lse and Dsum into shared memory, the dQ
// reductions). 128 keys per block, 64 queries per step. Needs a.tile_stats
// (flash_backward_prepare's); not deterministic (stops with a message if asked). Key blocks in
// causal_order as flash_backward_wgmma's. persistent_ctas > 0: the persistent kernel (its
// PERSISTENT) on at most that many CTAs, one per SM at most; 0: one block per CTA. The caller
// asks for it only when not causal.
size_t flash_backward_ws_smem_bytes(void);
// The 80-query swapAB kernel (flash_backward_ws_swapab.cu; ATTENTION_BACKWARD_WS on): the same
// producer and consumers, FlashAttention-3's tiles (80 queries a step; causal_tile, 80 or 64,
// when causal and not dropping; S^T, dP^T and dQ^T computed transposed). Needs a.tile_stats; not
// deterministic (stops with a message if asked); persistent as flash_backward_ws, and likewise
// only when not causal. The shared memory: the 80-query tiles' (the larger).
size_t flash_backward_ws_swapab_smem_bytes(void);
template <typename T>
void flash_backward_ws_swapab(const BwdArgs &a, AttentionCausalOrder causal_order, int persistent_ctas,
                              int causal_tile);
template <typename T>
void flash_backward_ws(const BwdArgs &a, AttentionCausalOrder causal_order, int persistent_ctas);

#endif  // KERNELS_ATTENTION_FLASH_KERNELS_CUH
