// What cuBLASLt's epilogues cost, and what autotuning buys, at the quickstart's shapes.
//
// For each product of the MLP (tokens 8192, hidden 4096, ffn 16384): the plain GEMM, then
// the same GEMM with the epilogue our modules use; each with the heuristic's first algorithm
// and with the fastest of its candidates (gemm_autotune). TFLOP/s = 2 m n k / time.
#include <stdio.h>
#include <stdlib.h>

#include "common/core/flags.h"
#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu.h"
#include "modules/gemm.h"

static double time_gemm(const Gemm *g) {
    cudaEvent_t a, b;
    CUDA_CHECK(cudaEventCreate(&a));
    CUDA_CHECK(cudaEventCreate(&b));
    for (int i = 0; i < 3; i++) gemm_run(g);
    CUDA_CHECK(cudaEventRecord(a, 0));
    for (int i = 0; i < 10; i++) gemm_run(g);
    CUDA_CHECK(cudaEventRecord(b, 0));
    CUDA_CHECK(cudaEventSynchronize(b));
    float ms;
    CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    return ms / 10;
}

static void *random_dev(int64_t n, uint64_t stream) {
    float *h = malloc((size_t)n * sizeof(float));
    fill_uniform(h, n, -0.1f, 0.1f, 7, stream);
    void *d = dev_upload(h, n, DTYPE_FP16);
    free(h);
    return d;
}

int main(int argc, char **argv) {
    flags_require_none(argc, argv, "usage: gemm_bench\n"
                       "  What cuBLASLt's epilogues cost and what autotuning buys, at the quickstart's MLP shapes\n"
                       "  (tokens 8192, hidden 4096, ffn 16384). Takes no flags; needs a CUDA GPU.\n");
    gpu_require();
    const int64_t t = 8192, h = 4096, f = 16384;
    void *x = random_dev(t * h, 1), *w1 = random_dev(f * h, 2), *w2 = random_dev(h * f, 3);
    void *act = random_dev(t * f, 4), *aux = random_dev(t * f, 5), *dy = random_dev(t * h, 6);
    void *out_f = dev_alloc((size_t)t * f * 2), *out_h = dev_alloc((size_t)t * h * 2);
    void *dw = dev_alloc((size_t)f * h * 2), *bias = random_dev(f, 7), *dbias = dev_alloc((size_t)f * 2);
    struct {
        const char *name;
        Gemm g;
    } cases[] = {
        {"FC1 fwd", {.trans_a = 1, .m = f, .n = t, .k = h, .a = w1, .lda = h, .b = x, .ldb = h, .d = out_f, .ldd = f}},
        {"FC1 fwd +bias+GELU+aux", {.trans_a = 1, .m = f, .n = t, .k = h, .a = w1, .lda = h, .b = x, .ldb = h,
                                    .d = out_f, .ldd = f, .epilogue = GEMM_EPILOGUE_GELU_AUX_BIAS, .bias = bias,
                                    .aux = aux, .aux_ld = f}},
        {"FC2 fwd", {.trans_a = 1, .m = h, .n = t, .k = f, .a = w2, .lda = f, .b = act, .ldb = f, .d = out_h, .ldd = h}},
        {"FC2 fwd +bias+residual", {.trans_a = 1, .m = h, .n = t, .k = f, .a = w2, .lda = f, .b = act, .ldb = f,
                                    .c = dy, .d = out_h, .ldd = h, .epilogue = GEMM_EPILOGUE_BIAS, .bias = bias}},
        {"FC2 dgrad", {.m = f, .n = t, .k = h, .a = w2, .lda = f, .b = dy, .ldb = h, .d = out_f, .ldd = f}},
        {"FC2 dgrad +dGELU+bgrad", {.m = f, .n = t, .k = h, .a = w2, .lda = f, .b = dy, .ldb = h, .d = out_f,
                                    .ldd = f, .epilogue = GEMM_EPILOGUE_DGELU_BGRAD, .bias = dbias, .aux = aux,
                                    .aux_ld = f}},
        {"FC2 dgrad +dGELU", {.m = f, .n = t, .k = h, .a = w2, .lda = f, .b = dy, .ldb = h, .d = out_f, .ldd = f,
                              .epilogue = GEMM_EPILOGUE_DGELU, .aux = aux, .aux_ld = f}},
        {"FC1 wgrad", {.trans_b = 1, .m = h, .n = f, .k = t, .a = x, .lda = h, .b = act, .ldb = f, .d = dw, .ldd = h}},
        {"FC1 wgrad +bgradB", {.trans_b = 1, .m = h, .n = f, .k = t, .a = x, .lda = h, .b = act, .ldb = f, .d = dw,
                               .ldd = h, .epilogue = GEMM_EPILOGUE_BGRADB, .bias = dbias}},
    };
    printf("GPU: %s; fp16, fp32 accumulation\n", gpu_description());
    printf("%-26s %13s %13s\n", "", "heuristic", "autotuned");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Gemm g = cases[i].g;
        g.dtype = DTYPE_FP16;
        double flops = 2.0 * g.m * g.n * g.k, ms[2];
        for (int tune = 0; tune < 2; tune++) {
            gemm_clear_plans();
            gemm_autotune = tune;
            ms[tune] = time_gemm(&g);
        }
        printf("%-26s %6.3f ms %3.0f %6.3f ms %3.0f TFLOP/s\n", cases[i].name, ms[0], flops / ms[0] / 1e9, ms[1],
               flops / ms[1] / 1e9);
    }
    return 0;
}
