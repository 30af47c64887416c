// Hopper's tools for a producer/consumer kernel, as thin wrappers over PTX: TMA copies of
// tensor tiles, mbarriers that count the bytes landing, named barriers, and the register
// hand-over between warpgroups.
//
//   producer warp                              consumer warpgroups
//   wait(empty[s]) ... TMA copy into stage s   wait(full[s]) ... wgmmas read stage s
//   arrive_expect_tx(full[s], bytes)           arrive(empty[s]) once the wgmmas are done
//
// A TMA copy (cp.async.bulk.tensor) is issued by one thread: the copy engine reads a box of a
// tensor described by a CUtensorMap (made on the host), writes it to shared memory already
// swizzled (wgmma.cuh's 128-byte swizzle) and counts its bytes on an mbarrier; the barrier
// completes its phase once the expected bytes have landed. Each completion flips the
// barrier's phase bit, so waiting for use k of a barrier means waiting for parity k & 1.
#ifndef KERNELS_ATTENTION_HOPPER_PIPELINE_CUH
#define KERNELS_ATTENTION_HOPPER_PIPELINE_CUH

#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include <type_traits>

#include "common/core/errors.h"
#include "common/gpu/cuda_check.h"
#include "kernels/attention/mma.cuh"

// cuTensorMapEncodeTiled is a driver function, fetched through the runtime so that nothing
// links against the driver library.
inline PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
    static PFN_cuTensorMapEncodeTiled_v12000 encode = nullptr;
    if (!encode) {
        cudaDriverEntryPointQueryResult found;
        CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", (void **)&encode, 12000,
                                                    cudaEnableDefault, &found));
        if (found != cudaDriverEntryPointSuccess) DIE("the CUDA driver has no cuTensorMapEncodeTiled");
    }
    return encode;
}

// Host: the tensor map of a [seq][batch][row_elems] tensor of 16-bit values (a fused QKV
// tensor, or ctx) for TMA copies of boxes of box_rows tokens x 64 columns (128 bytes, the
// swizzle's width) of one batch entry, written to shared memory with the 128-byte swizzle;
// tokens past seq read as zeros.
template <typename T>
inline CUtensorMap tensor_map_rows(const void *base, int64_t row_elems, int batch, int seq, int box_rows) {
    CUtensorMap map;
    const cuuint64_t dims[3] = {(cuuint64_t)row_elems, (cuuint64_t)batch, (cuuint64_t)seq};
    const cuuint64_t strides[2] = {(cuuint64_t)row_elems * sizeof(T), (cuuint64_t)batch * row_elems * sizeof(T)};
    const cuuint32_t box[3] = {64, 1, (cuuint32_t)box_rows}, element_strides[3] = {1, 1, 1};
    const CUresult r = tensor_map_encoder()(
        &map, std::is_same<T, __half>::value ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3,
        const_cast<void *>(base), dims, strides, box, element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
        CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS)
        DIE("flash attention: cannot describe a tensor for the TMA (error %d; rows must be 16-byte aligned)", (int)r);
    return map;
}

// Host: the tensor map of a float tensor [matrices][seq][row_floats] (the backward's dQ
// accumulator, one [seq][row_floats] matrix per batch entry and head; or the deterministic
// backward's slices, one such accumulator per key block) for TMA reductions or stores of
// boxes of box_rows rows x 32 floats (128 bytes) of one matrix, read from shared memory with the
// 128-byte swizzle; rows past seq are left alone.
inline CUtensorMap tensor_map_float_rows(float *base, int row_floats, int seq, int matrices, int box_rows) {
    CUtensorMap map;
    const cuuint64_t dims[3] = {(cuuint64_t)row_floats, (cuuint64_t)seq, (cuuint64_t)matrices};
    const cuuint64_t strides[2] = {(cuuint64_t)row_floats * 4, (cuuint64_t)seq * row_floats * 4};
    const cuuint32_t box[3] = {32, (cuuint32_t)box_rows, 1}, element_strides[3] = {1, 1, 1};
    const CUresult r = tensor_map_encoder()(&map, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 3, base, dims, strides, box,
                                            element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                            CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) DIE("flash attention: cannot describe dQ's accumulator for the TMA (error %d)", (int)r);
    return map;
}

// Host: the four tensor maps of a Hopper attention backward (flash_backward_wgmma.cu,
// flash_backward_swapab.cu) for its arguments `a` (BwdArgs, flash_kernels.cuh): Q and dO in
// boxes of query_rows tokens, K and V in boxes of key_rows (qkv and dctx seen as
// [seq][batch][row]: head h's q, k, v at columns h * 3d, + d, + 2d of qkv, its dO at h * d of
// dctx), and dQ's float accumulator - dq_matrices matrices of [seq][head_dim] (batch * heads,
// times the slices when deterministic) - in boxes of dq_rows rows x 32 floats (64, or the 80-query
// backward's 80).
struct BackwardTensorMaps {
    CUtensorMap q, kv, d_o, dq;
};

template <typename T, typename Args>
inline BackwardTensorMaps backward_tensor_maps(const Args &a, int head_dim, int query_rows, int key_rows,
                                               int dq_matrices, int dq_rows = 64) {
    return {tensor_map_rows<T>(a.qkv, a.qkv_row, a.batch, a.seq, query_rows),
            tensor_map_rows<T>(a.qkv, a.qkv_row, a.batch, a.seq, key_rows),
            tensor_map_rows<T>(a.dctx, a.ctx_row, a.batch, a.seq, query_rows),
            tensor_map_float_rows(a.dq_accum, head_dim, a.seq, dq_matrices, dq_rows)};
}

__device__ __forceinline__ void mbarrier_init(uint64_t *bar, int count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count) : "memory");
}

__device__ __forceinline__ void mbarrier_arrive(uint64_t *bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_addr(bar)) : "memory");
}

// Arrives and announces `bytes` more to land (by TMA) before the phase completes.
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint64_t *bar, int bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(bytes)
                 : "memory");
}

// Until the barrier's phase with this parity has completed.
__device__ __forceinline__ void mbarrier_wait(uint64_t *bar, int parity) {
    uint32_t done;
    do {
        asm volatile(
            "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
            : "=r"(done)
            : "r"(smem_addr(bar)), "r"(parity)
            : "memory");
    } while (!done);
}

// TMA: the box at coordinates (c0, c1, c2) of a 3-D tensor map into shared memory; its bytes
// are counted on bar.
__device__ __forceinline__ void tma_load_3d(void *dst, const CUtensorMap *map, int c0, int c1, int c2,
                                            uint64_t *bar) {
    asm volatile(
        "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], "
        "[%5];\n" ::"r"(smem_addr(dst)),
        "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(smem_addr(bar))
        : "memory");
}

// A plain bulk copy (no tensor map): `bytes` contiguous bytes from global memory into shared
// memory, counted on bar as tma_load_3d's. Both addresses 16-byte aligned, bytes a multiple of
// 16 (the swapAB backward's per-query lse and Dsum of a query tile).
__device__ __forceinline__ void bulk_load_1d(void *dst, const void *src, int bytes, uint64_t *bar) {
    asm volatile(
        "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
            smem_addr(dst)),
        "l"(reinterpret_cast<uint64_t>(src)), "r"(bytes), "r"(smem_addr(bar))
        : "memory");
}

// A TMA reduction, issued by one thread: the TMA unit reads a box of floats from shared memory
// (laid out as the map's swizzle says) and adds it element by element into the tensor of `map`
// at (c0, c1, c2), in L2. Committed as one of this thread's bulk groups, which bulk_wait_read
// and bulk_wait_all wait for.
__device__ __forceinline__ void tma_reduce_add_3d(const CUtensorMap *map, int c0, int c1, int c2,
                                                  const float *shared_src) {
    asm volatile(
        "cp.reduce.async.bulk.tensor.3d.global.shared::cta.add.tile.bulk_group [%0, {%1, %2, %3}], [%4];\n" ::"l"(
            reinterpret_cast<uint64_t>(map)),
        "r"(c0), "r"(c1), "r"(c2), "r"(smem_addr(shared_src))
        : "memory");
    asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
}

// A TMA store, issued by one thread: as tma_reduce_add_3d, but the box overwrites the tensor's
// values instead of adding to them (the deterministic backward's dQ slices).
__device__ __forceinline__ void tma_store_3d(const CUtensorMap *map, int c0, int c1, int c2, const float *shared_src) {
    asm volatile("cp.async.bulk.tensor.3d.global.shared::cta.bulk_group [%0, {%1, %2, %3}], [%4];\n" ::"l"(
                     reinterpret_cast<uint64_t>(map)),
                 "r"(c0), "r"(c1), "r"(c2), "r"(smem_addr(shared_src))
                 : "memory");
    asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
}

// Until this thread's bulk reductions (or stores) have read their shared-memory source.
__device__ __forceinline__ void bulk_wait_read() { asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory"); }
// Until they have completed.
__device__ __forceinline__ void bulk_wait_all() { asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory"); }

// Named barriers (ids 1-15; 0 is __syncthreads'): `threads` threads take part, some waiting
// (sync), some only signalling (arrive).
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// A warpgroup gives registers back (the producer, which needs few) or takes them (the
// consumers): the register file is split unevenly between warpgroups.
template <int REGS>
__device__ __forceinline__ void warpgroup_release_registers() {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(REGS));
}
template <int REGS>
__device__ __forceinline__ void warpgroup_claim_registers() {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(REGS));
}

#endif  // KERNELS_ATTENTION_HOPPER_PIPELINE_CUH
