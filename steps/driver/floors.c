#include "steps/driver/floors.h"

#include <stdio.h>
#include <stdlib.h>

#include "common/core/errors.h"
#include "common/core/gpu_arch.h"
#include "common/fp8/fp8_format.h"
#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu.h"
#include "kernels/attention/attention.h"
#include "modules/fp8_gemm.h"
#include "modules/gemm.h"

typedef void (*Work)(const void *ctx);

// The fastest of `runs` timings of `reps` calls, in ms per call, after one untimed call.
static double fastest_ms(Work work, const void *ctx, int runs, int reps) {
    cudaEvent_t start, stop;
    CUDA_CHECK(cudaEventCreate(&start));
    CUDA_CHECK(cudaEventCreate(&stop));
    work(ctx);
    float best = 1e30f;
    for (int r = 0; r < runs; r++) {
        CUDA_CHECK(cudaEventRecord(start, 0));
        for (int i = 0; i < reps; i++) work(ctx);
        CUDA_CHECK(cudaEventRecord(stop, 0));
        CUDA_CHECK(cudaEventSynchronize(stop));
        float ms;
        CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
        if (ms < best) best = ms;
    }
    CHECK_LAUNCH();
    CUDA_CHECK(cudaEventDestroy(start));
    CUDA_CHECK(cudaEventDestroy(stop));
    return best / reps;
}

static void *random_device(int64_t n, DType dtype, uint64_t stream) {
    float *host = xmalloc((size_t)n * sizeof(float));
    fill_uniform(host, n, -1.0f, 1.0f, 17, stream);
    void *dev = dev_upload(host, n, dtype);
    free(host);
    return dev;
}

enum { GEMM_N = 8192 };

static void run_gemm(const void *ctx) { gemm_run((const Gemm *)ctx); }

static double gemm_tflops(DType dtype) {
    const int64_t n = GEMM_N;
    void *a = random_device(n * n, dtype, 1), *b = random_device(n * n, dtype, 2);
    void *d = dev_alloc((size_t)n * n * dtype_bytes(dtype));
    Gemm g = {.trans_a = 1, .trans_b = 0, .m = n, .n = n, .k = n, .a = a, .lda = n, .b = b, .ldb = n,
              .d = d, .ldd = n, .epilogue = GEMM_EPILOGUE_NONE, .dtype = dtype};
    double ms = fastest_ms(run_gemm, &g, 3, 10);
    dev_free(a), dev_free(b), dev_free(d);
    return 2.0 * n * n * n / (ms * 1e-3) / 1e12;
}

static void run_fp8_gemm(const void *ctx) { fp8_gemm_run((const Fp8Gemm *)ctx); }

static uint8_t *random_fp8_device(int64_t n, uint64_t stream) {
    float *host = xmalloc((size_t)n * sizeof(float));
    fill_uniform(host, n, -1.0f, 1.0f, 17, stream);
    uint8_t *codes = xmalloc((size_t)n);
    for (int64_t i = 0; i < n; i++) codes[i] = fp8_encode(host[i], FP8_E4M3);
    uint8_t *dev = dev_alloc((size_t)n);
    CUDA_CHECK(cudaMemcpy(dev, codes, (size_t)n, cudaMemcpyHostToDevice));
    free(host);
    free(codes);
    return dev;
}

static double fp8_gemm_tflops(DType out_dtype) {
    const int64_t n = GEMM_N;
    uint8_t *a = random_fp8_device(n * n, 3), *b = random_fp8_device(n * n, 4);
    void *d = dev_alloc((size_t)n * n * dtype_bytes(out_dtype));
    const float one = 1.0f;
    float *scale_inv = dev_upload_f32(&one, 1);
    Fp8Gemm g = {.m = n, .n = n, .k = n, .a = a, .a_format = FP8_E4M3, .a_scale_inv = scale_inv, .b = b,
                 .b_format = FP8_E4M3, .b_scale_inv = scale_inv, .d = d, .ldd = n, .out_dtype = out_dtype,
                 .fast_accum = 1};
    double ms = fastest_ms(run_fp8_gemm, &g, 3, 10);
    dev_free(a), dev_free(b), dev_free(d), dev_free(scale_inv);
    return 2.0 * n * n * n / (ms * 1e-3) / 1e12;
}

typedef struct {
    const LayerConfig *cfg;
    void *qkv, *ctx, *dctx, *dqkv, *scratch;
    float *lse;
} AttentionCase;

static void run_attention_forward(const void *ctx) {
    const AttentionCase *a = ctx;
    const LayerConfig *c = a->cfg;
    const AttentionProblem p = attention_layer_problem(c);
    const AttentionDropout d = attention_layer_dropout(c, 0);
    attention_forward(&p, &d, a->qkv, a->ctx, a->lse);
}

static void run_attention_backward(const void *ctx) {
    const AttentionCase *a = ctx;
    const LayerConfig *c = a->cfg;
    const AttentionProblem p = attention_layer_problem(c);
    const AttentionDropout d = attention_layer_dropout(c, 0);
    attention_backward(&p, &d, a->qkv, a->ctx, a->dctx, a->lse, a->dqkv, a->scratch);
}

// Forward and backward TFLOP/s, FLOPs counted as layer_category_work counts them.
static void attention_tflops(const LayerConfig *c, double *fwd, double *bwd) {
    *fwd = *bwd = 0;
    const AttentionProblem p = attention_layer_problem(c);
    if (attention_unsupported(&p)) return;
    const int64_t t = layer_tokens(c), h = c->hidden;
    AttentionCase a = {.cfg = c};
    a.qkv = random_device(t * 3 * h, c->dtype, 5);
    a.dctx = random_device(t * h, c->dtype, 6);
    a.ctx = dev_alloc((size_t)t * h * dtype_bytes(c->dtype));
    a.dqkv = dev_alloc((size_t)t * 3 * h * dtype_bytes(c->dtype));
    a.lse = dev_alloc((size_t)c->batch * c->heads * c->seq * sizeof(float));
    a.scratch = dev_alloc(attention_backward_workspace_bytes(&p));
    CategoryWork w;
    layer_category_work(c, &(LayerVariant){LAYER_SERIAL, 0, 1}, &w);
    *fwd = w.flops[CAT_ATTN_FWD] / (fastest_ms(run_attention_forward, &a, 5, 1) * 1e-3) / 1e12;
    *bwd = w.flops[CAT_ATTN_BWD] / (fastest_ms(run_attention_backward, &a, 5, 1) * 1e-3) / 1e12;
    void *bufs[] = {a.qkv, a.dctx, a.ctx, a.dqkv, a.lse, a.scratch};
    dev_free_all(bufs, COUNT_OF(bufs));
}

typedef struct {
    void *src, *dst;
    size_t bytes;
} Copy;

static void run_copy(const void *ctx) {
    const Copy *c = ctx;
    CUDA_CHECK(cudaMemcpy(c->dst, c->src, c->bytes, cudaMemcpyDeviceToDevice));
}

static double copy_gbps(void) {
    Copy c = {.bytes = (size_t)256 << 20};
    c.src = dev_alloc(c.bytes);
    c.dst = dev_alloc(c.bytes);
    CUDA_CHECK(cudaMemset(c.src, 1, c.bytes));
    double ms = fastest_ms(run_copy, &c, 5, 4);
    dev_free(c.src), dev_free(c.dst);
    return 2.0 * c.bytes / (ms * 1e-3) / 1e9;
}

MeasuredRates measure_rates(const LayerConfig *cfg, int fp8) {
    MeasuredRates r = {0};
    r.gemm_tflops = gemm_tflops(cfg->dtype);
    if (fp8 && gpu_arch_has_fp8(gpu_effective_cc())) r.fp8_gemm_tflops = fp8_gemm_tflops(cfg->dtype);
    attention_tflops(cfg, &r.attn_fwd_tflops, &r.attn_bwd_tflops);
    r.copy_gbps = copy_gbps();
    return r;
}

static void print_rate(FILE *f, const char *what, double value, const char *unit) {
    if (value > 0) fprintf(f, "  %-52s %8.0f %s\n", what, value, unit);
    else fprintf(f, "  %-52s %8s\n", what, "not measured");
}

void print_rates(FILE *f, const LayerConfig *cfg, const MeasuredRates *r) {
    char what[96];
    fprintf(f, "rates measured on this GPU (the floors' denominators):\n");
    snprintf(what, sizeof what, "GEMM %s, cuBLASLt %d^3, random data", dtype_name(cfg->dtype), GEMM_N);
    print_rate(f, what, r->gemm_tflops, "TFLOP/s");
    snprintf(what, sizeof what, "GEMM FP8 E4M3, cuBLASLt %d^3, fast accumulation", GEMM_N);
    print_rate(f, what, r->fp8_gemm_tflops, "TFLOP/s");
    print_rate(f, "attention forward alone, this layer's shape", r->attn_fwd_tflops, "TFLOP/s");
    print_rate(f, "attention backward alone (2.5x forward's FLOPs)", r->attn_bwd_tflops, "TFLOP/s");
    print_rate(f, "cudaMemcpy device to device (read + write)", r->copy_gbps, "GB/s");
}
