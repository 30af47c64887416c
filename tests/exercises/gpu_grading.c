#include "tests/exercises/gpu_grading.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdlib.h>

#include "common/core/errors.h"
#include "common/core/half.h"
#include "tests/test_util.h"

// A CUDA error in the test's own calls (not the code under test): fail the case, naming the call.
#define GPU_OK(call)                                                                                    \
    do {                                                                                                \
        cudaError_t e_ = (call);                                                                        \
        if (e_ != cudaSuccess)                                                                          \
            fail_msg("%s failed: %s (%s) - an earlier kernel may have broken the GPU context", #call,     \
                     cudaGetErrorName(e_), cudaGetErrorString(e_));                                     \
    } while (0)

void *gpu_alloc_poisoned(size_t bytes) {
    void *p = NULL;
    GPU_OK(cudaMalloc(&p, bytes ? bytes : 1));
    GPU_OK(cudaMemset(p, 0xff, bytes));
    return p;
}

void gpu_free(void *p) { cudaFree(p); }

void gpu_expect_no_error(const char *what) {
    cudaError_t launch = cudaGetLastError();
    cudaError_t run = cudaDeviceSynchronize();
    if (launch != cudaSuccess)
        fail_msg("%s: the kernel did not launch: %s (%s). Check the grid and block sizes (at most 1024 threads "
                 "per block, at least 1 block) and the shared memory asked for", what, cudaGetErrorName(launch),
                 cudaGetErrorString(launch));
    if (run != cudaSuccess)
        fail_msg("%s: the kernel failed while running: %s (%s). An out-of-bounds access is the usual cause: does "
                 "every thread check its index against the size? (compute-sanitizer finds the line)", what,
                 cudaGetErrorName(run), cudaGetErrorString(run));
}

void *gpu_upload_fp16(const float *host, int64_t n) {
    uint16_t *bits = xmalloc((size_t)n * sizeof(uint16_t));
    for (int64_t i = 0; i < n; i++) bits[i] = float_to_fp16(host[i]);
    void *dev = NULL;
    GPU_OK(cudaMalloc(&dev, (size_t)n * sizeof(uint16_t)));
    GPU_OK(cudaMemcpy(dev, bits, (size_t)n * sizeof(uint16_t), cudaMemcpyHostToDevice));
    free(bits);
    return dev;
}

void gpu_download_fp16(float *host, const void *dev, int64_t n) {
    uint16_t *bits = xmalloc((size_t)n * sizeof(uint16_t));
    GPU_OK(cudaMemcpy(bits, dev, (size_t)n * sizeof(uint16_t), cudaMemcpyDeviceToHost));
    for (int64_t i = 0; i < n; i++) host[i] = fp16_to_float(bits[i]);
    free(bits);
}

void *gpu_upload_f32(const float *host, int64_t n) {
    void *dev = NULL;
    GPU_OK(cudaMalloc(&dev, (size_t)n * sizeof(float)));
    GPU_OK(cudaMemcpy(dev, host, (size_t)n * sizeof(float), cudaMemcpyHostToDevice));
    return dev;
}

void gpu_download_f32(float *host, const void *dev, int64_t n) {
    GPU_OK(cudaMemcpy(host, dev, (size_t)n * sizeof(float), cudaMemcpyDeviceToHost));
}

void gpu_download_bytes(void *host, const void *dev, size_t bytes) {
    GPU_OK(cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost));
}

double gpu_time_us(GpuOp op, void *ctx) {
    enum { WARMUP = 3, REPS = 15, INNER = 10 };
    double t[REPS];
    cudaEvent_t start, stop;
    GPU_OK(cudaEventCreate(&start));
    GPU_OK(cudaEventCreate(&stop));
    for (int i = 0; i < WARMUP; i++) op(ctx);
    for (int r = 0; r < REPS; r++) {
        GPU_OK(cudaEventRecord(start, 0));
        for (int i = 0; i < INNER; i++) op(ctx);
        GPU_OK(cudaEventRecord(stop, 0));
        GPU_OK(cudaEventSynchronize(stop));
        float ms = 0;
        GPU_OK(cudaEventElapsedTime(&ms, start, stop));
        t[r] = 1e3 * ms / INNER;
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    for (int i = 1; i < REPS; i++)  // insertion sort, then the middle one
        for (int j = i; j > 0 && t[j] < t[j - 1]; j--) {
            double s = t[j];
            t[j] = t[j - 1];
            t[j - 1] = s;
        }
    return t[REPS / 2];
}

typedef struct {
    void *dst, *src;
    size_t bytes;
} Copy;

static void run_copy(void *ctx) {
    Copy *c = ctx;
    cudaMemcpyAsync(c->dst, c->src, c->bytes, cudaMemcpyDeviceToDevice, 0);
}

double gpu_copy_bytes_per_s(size_t bytes) {
    Copy c = {NULL, NULL, bytes};
    GPU_OK(cudaMalloc(&c.src, bytes));
    GPU_OK(cudaMalloc(&c.dst, bytes));
    GPU_OK(cudaMemset(c.src, 0x3c, bytes));
    const double us = gpu_time_us(run_copy, &c);
    cudaFree(c.src);
    cudaFree(c.dst);
    return 2.0 * (double)bytes / (us * 1e-6);  // read once, written once
}

typedef struct {
    cublasHandle_t handle;
    void *a, *b, *c;
    int m, n, k;
} Gemm;

// Row-major C [m, n] = A [m, k] B [k, n] is column-major C^T = B^T A^T: cuBLAS gets (n, m, k).
static void run_gemm(void *ctx) {
    Gemm *g = ctx;
    const float one = 1.0f, zero = 0.0f;
    cublasGemmEx(g->handle, CUBLAS_OP_N, CUBLAS_OP_N, g->n, g->m, g->k, &one, g->b, CUDA_R_16F, g->n, g->a,
                 CUDA_R_16F, g->k, &zero, g->c, CUDA_R_16F, g->n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}

double gpu_gemm_flops_per_s(int m, int n, int k) {
    Gemm g = {NULL, NULL, NULL, NULL, m, n, k};
    if (cublasCreate(&g.handle) != CUBLAS_STATUS_SUCCESS) fail_msg("cublasCreate failed");
    GPU_OK(cudaMalloc(&g.a, (size_t)m * k * 2));
    GPU_OK(cudaMalloc(&g.b, (size_t)k * n * 2));
    GPU_OK(cudaMalloc(&g.c, (size_t)m * n * 2));
    GPU_OK(cudaMemset(g.a, 0x2c, (size_t)m * k * 2));  // small fp16 values (0x2c2c ~ 0.06): no overflow
    GPU_OK(cudaMemset(g.b, 0x2c, (size_t)k * n * 2));
    const double us = gpu_time_us(run_gemm, &g);
    cudaFree(g.a), cudaFree(g.b), cudaFree(g.c);
    cublasDestroy(g.handle);
    return 2.0 * m * n * (double)k / (us * 1e-6);
}

void print_speed_line(const char *what, double yours_us, double reference_us, double work, double yardstick_rate,
                      const char *yardstick) {
    const double yours = 100.0 * work / (yours_us * 1e-6) / yardstick_rate;
    const double ref = 100.0 * work / (reference_us * 1e-6) / yardstick_rate;
    print_message("speed: %s %.1f us, %.0f%% of %s; the reference solution %.1f us, %.0f%%\n", what, yours_us, yours,
                  yardstick, reference_us, ref);
}
