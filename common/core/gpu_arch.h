// What each GPU generation can run, by compute capability (cc = 10 * major + minor: 80 for an
// A100, 86 for RTX 30xx, 89 for L4 / L40S / RTX 40xx, 90 for H100 / H200). Plain C, so that a
// CPU test covers every generation; common/gpu/gpu.h applies it to the GPU at hand.
//
// Sources: the CUDA C++ Programming Guide's "Compute Capabilities" table (shared memory per
// block, opt-in), cuBLASLt's documentation (FP8 matmuls need compute capability 8.9 or newer),
// the PTX ISA (wgmma and the tensor-memory accelerator need sm_90a).
#ifndef COMMON_CORE_GPU_ARCH_H
#define COMMON_CORE_GPU_ARCH_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    GPU_ARCH_MIN = 80,      // bf16 tensor cores (mma.sync m16n8k16 on bf16), cp.async
    GPU_ARCH_MIN_FP8 = 89,  // FP8 tensor cores (cuBLASLt FP8 GEMMs, cvt to e4m3/e5m2)
    GPU_ARCH_HOPPER = 90,   // wgmma, TMA (our sm_90a kernels)
};

// The most dynamic shared memory one block may opt in to, in bytes: 227 KiB on 9.0, 163 KiB
// on 8.0 and 8.7, 99 KiB on 8.6, 8.9 and 12.x; 0 for a capability below GPU_ARCH_MIN.
size_t gpu_arch_max_smem_per_block(int cc);
// 1 where our wgmma/TMA kernels can run: exactly compute capability 9.0 (sm_90a code runs
// nowhere else).
int gpu_arch_has_wgmma(int cc);
// 1 where cuBLASLt has FP8 GEMMs (8.9 and newer).
int gpu_arch_has_fp8(int cc);
// NULL when a GPU of capability cc can run something that needs min_cc; otherwise a sentence
// naming the GPU, its capability, what needs more and the minimum, written into buf.
const char *gpu_arch_refusal(int cc, const char *gpu_name, const char *what, int min_cc, char *buf,
                             size_t n);
// "8.0" -> 80, "9.0" -> 90, "12.0" -> 120; -1 for anything else.
int gpu_arch_parse_cc(const char *text);

#ifdef __cplusplus
}
#endif

#endif  // COMMON_CORE_GPU_ARCH_H
