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
#include <stdint.h>

#include "kernels/attention/mma.cuh"

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
