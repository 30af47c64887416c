// The layer's twelve linear products (forward, input gradient, weight gradient of QKV,
// projection, FC1, FC2) at the quickstart size, in fp16 and in FP8 on cuBLASLt: the
// ceiling step 05 works towards. FP8: E4M3 x E4M3 with fast accumulation for forward,
// E4M3 x E5M2 without it for the gradients, as TE does.
#include <stdio.h>
#include <stdlib.h>

#include "common/core/flags.h"
#include "common/core/gpu_arch.h"
#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu.h"
#include "modules/fp8_gemm.h"
#include "modules/gemm.h"
#include "kernels/fp8/fp8_cast.h"

static double time_ms(void (*run)(const void *), const void *arg) {
    cudaEvent_t a, b;
    CUDA_CHECK(cudaEventCreate(&a));
    CUDA_CHECK(cudaEventCreate(&b));
    for (int i = 0; i < 3; i++) run(arg);
    CUDA_CHECK(cudaEventRecord(a, 0));
    for (int i = 0; i < 10; i++) run(arg);
    CUDA_CHECK(cudaEventRecord(b, 0));
    CUDA_CHECK(cudaEventSynchronize(b));
    float ms;
    CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    return ms / 10;
}

typedef struct {
    const void *x;
    void *copy, *dbias;
    uint8_t *out, *out_t;
    int64_t rows, cols;
    float *scale, *amax, *workspace;
} Cast;

static void run_copy(const void *p) {
    const Cast *c = p;
    CUDA_CHECK(cudaMemcpyAsync(c->copy, c->x, (size_t)(c->rows * c->cols) * 2, cudaMemcpyDeviceToDevice, 0));
}
static void run_cast(const void *p) {
    const Cast *c = p;
    fp8_cast_transpose(c->x, c->out, c->out_t, c->rows, c->cols, c->scale, c->amax, FP8_E4M3, DTYPE_FP16);
}
static void run_cast_dbias(const void *p) {
    const Cast *c = p;
    fp8_cast_transpose_dbias(c->x, c->out, c->out_t, c->rows, c->cols, c->scale, c->amax, FP8_E5M2, DTYPE_FP16,
                             c->dbias, c->workspace);
}

static void run_fp16(const void *g) { gemm_run((const Gemm *)g); }
static void run_fp8(const void *g) { fp8_gemm_run((const Fp8Gemm *)g); }

int main(int argc, char **argv) {
    flags_require_none(argc, argv, "usage: fp8_bench\n"
                       "  The layer's twelve linear products at the quickstart size, fp16 against FP8 (cuBLASLt).\n"
                       "  Takes no flags; needs a CUDA GPU of compute capability 8.9 or newer.\n");
    gpu_require();
    gpu_require_cc("fp8_bench (cuBLASLt's FP8 GEMMs)", GPU_ARCH_MIN_FP8);
    const int64_t t = 8192, h = 4096, f = 16384;
    const int64_t linears[4][2] = {{h, 3 * h}, {h, h}, {h, f}, {f, h}};  // {in, out}
    const char *names[4] = {"QKV", "proj", "FC1", "FC2"};
    const size_t big = (size_t)f * t;  // the largest operand
    float *host = malloc(big * sizeof(float));
    fill_uniform(host, (int64_t)big, -1.0f, 1.0f, 3, 1);
    void *a16 = dev_upload(host, (int64_t)big, DTYPE_FP16), *b16 = dev_upload(host, (int64_t)big, DTYPE_FP16);
    free(host);
    uint8_t *a8 = dev_alloc(big), *b8 = dev_alloc(big);
    CUDA_CHECK(cudaMemset(a8, 0x35, big));  // a mix of moderate E4M3/E5M2 values
    CUDA_CHECK(cudaMemset(b8, 0x2c, big));
    void *d = dev_alloc(big * 2);
    float one = 1.0f;
    float *scale = dev_upload_f32(&one, 1);
    printf("GPU: %s; the quickstart layer's linear products (tokens 8192)\n", gpu_description());
    printf("%-6s %-7s %8s %8s %8s %9s %9s\n", "linear", "product", "m", "n", "k", "fp16 ms", "fp8 ms");
    double total16 = 0, total8 = 0, flops = 0;
    for (int l = 0; l < 4; l++) {
        int64_t in = linears[l][0], out = linears[l][1];
        const char *what[3] = {"fwd", "dgrad", "wgrad"};
        int64_t shapes[3][3] = {{out, t, in}, {in, t, out}, {in, out, t}};  // m, n, k
        for (int p = 0; p < 3; p++) {
            int64_t m = shapes[p][0], n = shapes[p][1], k = shapes[p][2];
            Gemm g16 = {.trans_a = 1, .m = m, .n = n, .k = k, .a = a16, .lda = k, .b = b16, .ldb = k, .d = d,
                        .ldd = m, .dtype = DTYPE_FP16};
            Fp8Gemm g8 = {.m = m, .n = n, .k = k, .a = a8, .a_format = FP8_E4M3, .a_scale_inv = scale, .b = b8,
                          .b_format = p == 0 ? FP8_E4M3 : FP8_E5M2, .b_scale_inv = scale, .d = d, .ldd = m,
                          .out_dtype = DTYPE_FP16, .fast_accum = p == 0};
            double ms16 = time_ms(run_fp16, &g16), ms8 = time_ms(run_fp8, &g8);
            total16 += ms16, total8 += ms8, flops += 2.0 * m * n * k;
            printf("%-6s %-7s %8lld %8lld %8lld %9.3f %9.3f\n", names[l], what[p], (long long)m, (long long)n,
                   (long long)k, ms16, ms8);
        }
    }
    printf("all 12: fp16 %.2f ms (%.0f TFLOP/s), FP8 %.2f ms (%.0f TFLOP/s), %.2fx\n", total16,
           flops / total16 / 1e9, total8, flops / total8 / 1e9, total16 / total8);
    // The casts, at the largest activation ([tokens, ffn]: FC2's input, FC1's output gradient).
    float zero = 0.0f;
    Cast c = {.x = a16, .copy = d, .dbias = dev_alloc((size_t)f * 2), .out = a8, .out_t = b8, .rows = t, .cols = f,
              .scale = scale, .amax = dev_upload_f32(&zero, 1),
              .workspace = dev_alloc(fp8_cast_transpose_dbias_workspace_bytes(t, f))};
    const double bytes = 4.0 * t * f;
    double copy = time_ms(run_copy, &c), cast = time_ms(run_cast, &c), cast_db = time_ms(run_cast_dbias, &c);
    printf("[%lld x %lld] fp16 -> FP8 + transposed FP8: copy %.1f us (%.0f GB/s); cast+transpose %.1f us "
           "(%.0f GB/s, %.0f%% of copy); with dbias %.1f us (%.0f%%)\n", (long long)t, (long long)f, copy * 1e3,
           bytes / copy / 1e6, cast * 1e3, bytes / cast / 1e6, 100 * copy / cast, cast_db * 1e3, 100 * copy / cast_db);
    return 0;
}
