// What each GPU generation can run, by compute capability (cc = 10 * major + minor: 80 for an
// A100, 86 for RTX 30xx, 89 for L4 / L40S / RTX 40xx, 90 for H100 / H200). Plain C, so that a
// CPU test covers every generation (tests/common/gpu_arch_test.c); common/gpu/gpu.h applies
// it to the GPU at hand.
//
// Sources: the CUDA C++ Programming Guide's "Compute Capabilities" table (shared memory per
// block, opt-in) and its section on binary and PTX compatibility (which code a GPU can run),
// cuBLASLt's documentation (FP8 matmuls need compute capability 8.9 or newer), the PTX ISA
// (bf16 mma.sync needs sm_80; cvt to e4m3/e5m2 sm_89; wgmma and the tensor-memory
// accelerator sm_90a).
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

// The most dynamic shared memory one block may opt in to, in bytes: 227 KiB on 9.0 and 10.x,
// 163 KiB on 8.0 and 8.7, 99 KiB on 8.6, 8.9 and 12.x; 0 for a capability below GPU_ARCH_MIN.
// (A block's static __shared__ arrays count against the same limit.)
size_t gpu_arch_max_smem_per_block(int cc);
// 1 where our wgmma/TMA kernels can run: exactly compute capability 9.0 (sm_90a code runs
// nowhere else; Blackwell has other instructions).
int gpu_arch_has_wgmma(int cc);
// 1 where cuBLASLt has FP8 GEMMs (8.9 and newer).
int gpu_arch_has_fp8(int cc);
// What a GPU below min_cc lacks, in words: "bf16 tensor cores" for GPU_ARCH_MIN, "FP8 tensor
// cores" for GPU_ARCH_MIN_FP8, "wgmma and TMA" for GPU_ARCH_HOPPER, else "compute capability".
const char *gpu_arch_feature(int min_cc);

// NULL when a GPU of capability cc can run something (`what`, e.g. "step 05 (FP8)") that
// needs min_cc; otherwise one sentence naming what it needs, the minimum, the GPU and its
// capability, written into buf (n bytes) and returned:
//   "step 05 (FP8) needs FP8 tensor cores (compute capability 8.9 or newer: L4, L40S,
//    RTX 40xx, H100); this NVIDIA A100-SXM4-80GB is compute capability 8.0"
const char *gpu_arch_refusal(int cc, const char *gpu_name, const char *what, int min_cc, char *buf,
                             size_t n);
// "8.0" -> 80, "9.0" -> 90, "12.0" -> 120; -1 for anything else (digits only, one dot).
int gpu_arch_parse_cc(const char *text);

// Which code of a binary built with CUDA_ARCHS = `archs` (tools/cuda/gencode.sh: "80,86,89,
// 90a,compute_90") a GPU of capability cc runs, as the driver chooses it: machine code
// (SASS) built for its own major version and an equal or lower minor one ("sm_90a" runs on
// 9.0 only), the newest of them; else PTX of an equal or lower capability, JIT-compiled ("a"
// PTX on its own capability only), the newest. Writes "sm_86" or "compute_80" into buf and
// returns GPU_CODE_SASS or GPU_CODE_PTX; GPU_CODE_NONE (buf "") when nothing runs.
typedef enum { GPU_CODE_NONE = 0, GPU_CODE_SASS = 1, GPU_CODE_PTX = 2 } GpuCodeKind;
GpuCodeKind gpu_arch_code_for(const char *archs, int cc, char *buf, size_t n);

#ifdef __cplusplus
}
#endif

#endif  // COMMON_CORE_GPU_ARCH_H
