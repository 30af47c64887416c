// Which GPU code of this binary the current device runs: common/gpu/gpu.c asks once, when it
// selects the device (gpu_select), so that a binary without code for the GPU says so in a
// sentence instead of failing its first real launch with "no kernel image".
//
// Every .cu file of a build is compiled for the same CUDA_ARCHS (tools/cuda/cuda.bzl), and the
// driver picks among a file's images by the same rule, so the probe's answer holds for every
// kernel: which __CUDA_ARCH__ they were compiled for, and whether with sm_90a's features.
#ifndef COMMON_GPU_GPU_PROBE_H
#define COMMON_GPU_GPU_PROBE_H

#ifdef __cplusplus
extern "C" {
#endif

// Launches a one-thread kernel on the current device and reads back the __CUDA_ARCH__ its
// code was compiled for (800 for sm_80 machine code or compute_80 PTX alike; 900 for sm_90a)
// and 1 in *sm90a when it was compiled with sm_90a's features (wgmma, TMA). Returns 0
// (cudaSuccess), or the cudaError_t of the failure, e.g. cudaErrorNoKernelImageForDevice
// when the binary holds no code this GPU can run, cudaErrorUnsupportedPtxVersion when its
// PTX is newer than the driver.
int gpu_probe_code(int *cuda_arch, int *sm90a);
// The CUDA_ARCHS this binary was built with, e.g. "80,86,89,90a,compute_90".
const char *gpu_probe_build_archs(void);

#ifdef __cplusplus
}
#endif

#endif  // COMMON_GPU_GPU_PROBE_H
