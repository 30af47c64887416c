#include "common/gpu/gpu_probe.h"

#include <cuda_runtime.h>

// What the code that runs was compiled for: written by the probe kernel, read by the host.
__device__ int probe_result[2];

__global__ void gpu_probe_kernel() {
#ifdef __CUDA_ARCH__
    probe_result[0] = __CUDA_ARCH__;
#ifdef __CUDA_ARCH_FEAT_SM90_ALL
    probe_result[1] = 1;
#else
    probe_result[1] = 0;
#endif
#endif
}

extern "C" int gpu_probe_code(int *cuda_arch, int *sm90a) {
    *cuda_arch = 0, *sm90a = 0;
    // cudaFuncGetAttributes loads the kernel's module: where no image fits, it fails here
    // with the reason, before anything was launched.
    cudaFuncAttributes attr;
    cudaError_t err = cudaFuncGetAttributes(&attr, gpu_probe_kernel);
    if (err == cudaSuccess) {
        gpu_probe_kernel<<<1, 1>>>();
        err = cudaGetLastError();
    }
    int result[2] = {0, 0};
    if (err == cudaSuccess) err = cudaMemcpyFromSymbol(result, probe_result, sizeof result);
    if (err != cudaSuccess) {
        cudaGetLastError();  // not sticky: clear it so that the caller's checks start clean
        return (int)err;
    }
    *cuda_arch = result[0], *sm90a = result[1];
    return 0;
}

// GPU_BUILD_ARCHS comes from common/BUILD (CUDA_ARCHS, the --define of this build).
extern "C" const char *gpu_probe_build_archs(void) { return GPU_BUILD_ARCHS; }
