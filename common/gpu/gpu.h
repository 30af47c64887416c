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
// Exits with a clear message if there is no GPU; otherwise selects device 0.
void gpu_require(void);
// "NVIDIA H100 80GB HBM3, compute capability 9.0" (after gpu_require).
const char *gpu_description(void);
int gpu_compute_capability(void);  // e.g. 90: the device's own

// The compute capability that kernel dispatch and refusals use (after gpu_require): the
// device's, or a lower one from the environment variable GPU_SIMULATE_CC ("8.0", "8.6", "8.9"),
// so that the non-Hopper paths and the refusals of older GPUs run on a Hopper GPU. A value
// that does not parse, or is above the device's, stops the program with a clear message.
int gpu_effective_cc(void);
int gpu_cc_is_simulated(void);
// The most dynamic shared memory a block may use here, in bytes: the device's opt-in limit,
// or the simulated generation's (common/core/gpu_arch.h) when that is smaller.
size_t gpu_max_smem_per_block(void);

// Device memory, counted: every step allocates through these so that the driver can
// report its peak device memory.
void *dev_alloc(size_t bytes);
void dev_free(void *ptr);
size_t dev_bytes_in_use(void);
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
