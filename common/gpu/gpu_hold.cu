#include "common/gpu/gpu_hold.h"

#include <cuda_runtime.h>

#include "common/gpu/cuda_check.h"

// flag[0]: set by the host to release; flag[1]: set by the kernel when it gave up.
static volatile int *host_flag;
static int *device_flag;

__global__ void hold_kernel(volatile int *flag, long long timeout_cycles) {
    const long long start = clock64();
    while (flag[0] == 0) {
        if (clock64() - start > timeout_cycles) {
            flag[1] = 1;
            return;
        }
        __nanosleep(2000);
    }
}

extern "C" void gpu_hold_close(double timeout_ms) {
    if (!host_flag) {
        int *p;
        CUDA_CHECK(cudaHostAlloc((void **)&p, 2 * sizeof(int), cudaHostAllocMapped));
        host_flag = p;
        CUDA_CHECK(cudaHostGetDevicePointer((void **)&device_flag, p, 0));
    }
    host_flag[0] = host_flag[1] = 0;
    int device, khz;
    CUDA_CHECK(cudaGetDevice(&device));
    CUDA_CHECK(cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, device));
    hold_kernel<<<1, 1>>>(device_flag, (long long)(timeout_ms * khz));
    CHECK_LAUNCH();
}

extern "C" int gpu_hold_open(void) {
    __sync_synchronize();
    host_flag[0] = 1;
    __sync_synchronize();
    return host_flag[1];
}
