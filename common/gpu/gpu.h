// The GPU side of common/: finding a GPU, device memory that keeps count of its peak,
// moving float arrays to and from fp16/bf16 device buffers, and the shared cuBLAS handles.
//
// Plain C interface (the implementation is gpu.c, compiled as C against the CUDA runtime).
#ifndef COMMON_GPU_GPU_H
#define COMMON_GPU_GPU_H

#include <stddef.h>
#include <stdint.h>

#include "common/core/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

// Number of usable CUDA GPUs; 0 when there are none or no driver (never fails).
int gpu_count(void);
// Why gpu_count() is 0, in words: "no GPU (no NVIDIA driver / device found)" on a machine
// without an NVIDIA device, else CUDA's own reason (e.g. a driver too old for this runtime).
const char *gpu_unavailable_reason(void);
// Exits with a clear message if there is no GPU; otherwise gpu_select(0).
void gpu_require(void);
// Checks GPU_SIMULATE_CC's spelling now, before any GPU is asked for (whether the GPU can act as
// that one is checked once there is a GPU: gpu_require).
void gpu_require_valid_switches(void);
// The same for device `device` (one process per GPU: step 07's ranks); exits with a message
// naming both numbers if there are not that many GPUs.
void gpu_require_device(int device);
// "NVIDIA H100 80GB HBM3, compute capability 9.0" (after gpu_require).
// Makes `device` the current GPU and checks, before any real work, that this program can run
// there; otherwise exits (status 1) with one sentence saying why:
//   - its (effective, see gpu_effective_cc) compute capability is below 8.0 (no bf16 tensor
//     cores: a T4 or a V100);
//   - this binary holds no code the GPU can run (built for other GPUs: the sentence names
//     the CUDA_ARCHS it was built with), or its PTX is newer than the driver.
// Every query below selects the current device this way if nothing has yet.
void gpu_select(int device);
// "NVIDIA H100 80GB HBM3, compute capability 9.0"; with GPU_SIMULATE_CC=8.0 set:
// "NVIDIA H200, compute capability 9.0, acting as 8.0 (GPU_SIMULATE_CC)".
const char *gpu_description(void);
int gpu_compute_capability(void);  // e.g. 90: the device's own

// The compute capability that kernel dispatch and refusals use: the device's, or a lower one
// from the environment variable GPU_SIMULATE_CC ("8.0", "8.6", "8.9"; "7.5" to see the
// refusal of a T4), so that the non-Hopper paths and the refusals of older GPUs run on a
// Hopper GPU. A value that does not parse, or is above the device's, stops the program with
// a clear message.
int gpu_effective_cc(void);
int gpu_cc_is_simulated(void);
// The most dynamic shared memory a block may use here, in bytes (static __shared__ arrays
// count against it too): the device's opt-in limit, or the simulated generation's
// (common/core/gpu_arch.h) when that is smaller.
size_t gpu_max_smem_per_block(void);

// NULL when this GPU (its effective capability) has what `what` needs (min_cc, e.g.
// GPU_ARCH_MIN_FP8), else the refusal sentence (common/core/gpu_arch.h; a static buffer,
// overwritten by the next call), which names the GPU, its capability and the minimum.
const char *gpu_refusal(const char *what, int min_cc);
// gpu_refusal, as an exit: prints "error: <sentence>" and exits 1 when the GPU falls short.
void gpu_require_cc(const char *what, int min_cc);

// The code this binary runs on this GPU (found by a probe kernel in gpu_select): the
// __CUDA_ARCH__ it was compiled for (800: sm_80 machine code, or compute_80 PTX that the
// driver JIT-compiled; 900: sm_90a), and whether with sm_90a's features (wgmma, TMA): only
// then do the bodies of the sm_90a kernels exist. A Hopper GPU running a build of PTX for
// compute_80 has gpu_code_arch() 800 and gpu_code_has_sm90a() 0.
int gpu_code_arch(void);
int gpu_code_has_sm90a(void);
// "sm_90a machine code" or "compute_80 PTX, JIT-compiled by the driver", and the CUDA_ARCHS
// of the build: "sm_90a machine code (built for 80,86,89,90a,compute_90)".
const char *gpu_code_description(void);

// Device memory, counted: every step allocates through these so that the driver can
// report its peak device memory.
void *dev_alloc(size_t bytes);
void dev_free(void *ptr);  // NULL: nothing
// Frees every pointer of an array (NULLs skipped): a module's free lists its buffers once,
//     void *bufs[] = {m->a, m->b};  dev_free_all(bufs, COUNT_OF(bufs));
void dev_free_all(void *const *ptrs, size_t n);
#define COUNT_OF(array) (sizeof(array) / sizeof((array)[0]))
size_t dev_bytes_in_use(void);

// Where dev_alloc gets its memory: cudaMalloc, or an allocator a step installs (step 07's
// --nccl-register: NCCL's ncclMemAlloc, which common/ may not call itself). Counted the same.
typedef struct {
    const char *name;                                      // "ncclMemAlloc": in the failure message
    void *(*alloc)(size_t bytes, char *why, size_t size);  // NULL on failure, with the reason in why
    void (*free)(void *ptr);                               // exits on failure
} DevAllocator;
// dev_alloc uses `a` from now on (NULL: cudaMalloc again); returns the one it used so far, for
// the caller to put back. Each allocation remembers its allocator: dev_free frees by it.
const DevAllocator *dev_set_allocator(const DevAllocator *a);
// The live allocation holding ptr (base <= ptr < base + bytes): 1, with its base, its size as
// asked of dev_alloc, and its allocator (NULL: cudaMalloc); 0 if dev_alloc made none that holds
// it. Any out-pointer may be NULL.
int dev_find_allocation(const void *ptr, void **base, size_t *bytes, const DevAllocator **by);
size_t dev_peak_bytes(void);
void dev_reset_peak(void);

// Element size of a dtype on the device (2 for fp16 and bf16).
static inline size_t dtype_bytes(DType d) { (void)d; return 2; }

// Allocate a device buffer of n elements of `dtype` and fill it from float host data.
void *dev_upload(const float *host, int64_t n, DType dtype);
void dev_upload_to(void *dev, const float *host, int64_t n, DType dtype);
void dev_download(float *host, const void *dev, int64_t n, DType dtype);
// Uploads / downloads a float32 array unchanged.
void *dev_upload_f32(const float *host, int64_t n);
void dev_download_f32(float *host, const void *dev, int64_t n);

// Shared library handles and one cuBLAS(Lt) workspace, created on first use.
// (void * so that this header needs no CUDA headers; cast to cublasHandle_t etc.)
void *gpu_cublas_handle(void);
void *gpu_cublaslt_handle(void);
void *gpu_workspace(size_t *bytes);

void gpu_synchronize(void);

#ifdef __cplusplus
}
#endif

#endif  // COMMON_GPU_GPU_H
