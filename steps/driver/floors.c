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

// ms that `reps` calls of `work` take back to back on the default stream (CUDA events).
static double calls_ms(Work work, const void *ctx, int reps) {
    cudaEvent_t start, stop;
    CUDA_CHECK(cudaEventCreate(&start));
    CUDA_CHECK(cudaEventCreate(&stop));
    CUDA_CHECK(cudaEventRecord(start, 0));
    for (int i = 0; i < reps; i++) work(ctx);
    CUDA_CHECK(cudaEventRecord(stop, 0));
    CUDA_CHECK(cudaEventSynchronize(stop));
    CHECK_LAUNCH();
    float ms;
    CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    CUDA_CHECK(cudaEventDestroy(start));
    CUDA_CHECK(cudaEventDestroy(stop));
    return ms;
}

// The fastest of `runs` timings of `reps` calls, in ms per call, after one untimed call.
static double fastest_ms(Work work, const void *ctx, int runs, int reps) {
    work(ctx);
    double best = 1e30;
    for (int r = 0; r < runs; r++) {
        const double ms = calls_ms(work, ctx, reps);
        if (ms < best) best = ms;
    }
    return best / reps;
}

// The power-limit rates (MeasuredRates' limit_ fields): a product is run back to back for
// LIMIT_WARM_MS untimed, long enough for the GPU's power management to lower its clocks to what
// the board's power limit allows (it reacts within tens of milliseconds and keeps adjusting as
// the chip warms), then timed over LIMIT_TIMED_MS more. About 2 s per rate.
enum { LIMIT_WARM_MS = 1000, LIMIT_TIMED_MS = 1000 };

// ms per call of `work` held at the power limit as above; one_call_ms (a burst's time per call)
// sets how many calls fill each period. (The untimed calls are queued right before the timed
// ones: the GPU runs them all back to back.)
static double at_limit_ms(Work work, const void *ctx, double one_call_ms) {
    const int warm = (int)(LIMIT_WARM_MS / one_call_ms) + 1, timed = (int)(LIMIT_TIMED_MS / one_call_ms) + 1;
    for (int i = 0; i < warm; i++) work(ctx);
    return calls_ms(work, ctx, timed) / timed;
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

// TFLOP/s of an n^3 product that takes `ms`.
static double cube_tflops(int64_t n, double ms) { return 2.0 * n * n * n / (ms * 1e-3) / 1e12; }

// The GEMM rate in a burst (*tflops) and, if at_limit, at the power limit (*limit_tflops).
static void gemm_rates(DType dtype, int at_limit, double *tflops, double *limit_tflops) {
    const int64_t n = GEMM_N;
    void *a = random_device(n * n, dtype, 1), *b = random_device(n * n, dtype, 2);
    void *d = dev_alloc((size_t)n * n * dtype_bytes(dtype));
    Gemm g = {.trans_a = 1, .trans_b = 0, .m = n, .n = n, .k = n, .a = a, .lda = n, .b = b, .ldb = n,
              .d = d, .ldd = n, .epilogue = GEMM_EPILOGUE_NONE, .dtype = dtype};
    const double ms = fastest_ms(run_gemm, &g, 3, 10);
    *tflops = cube_tflops(n, ms);
    if (at_limit) *limit_tflops = cube_tflops(n, at_limit_ms(run_gemm, &g, ms));
    dev_free(a), dev_free(b), dev_free(d);
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

static void fp8_gemm_rates(DType out_dtype, int at_limit, double *tflops, double *limit_tflops) {
    const int64_t n = GEMM_N;
    uint8_t *a = random_fp8_device(n * n, 3), *b = random_fp8_device(n * n, 4);
    void *d = dev_alloc((size_t)n * n * dtype_bytes(out_dtype));
    const float one = 1.0f;
    float *scale_inv = dev_upload_f32(&one, 1);
    Fp8Gemm g = {.m = n, .n = n, .k = n, .a = a, .a_format = FP8_E4M3, .a_scale_inv = scale_inv, .b = b,
                 .b_format = FP8_E4M3, .b_scale_inv = scale_inv, .d = d, .ldd = n, .out_dtype = out_dtype,
                 .fast_accum = 1};
    const double ms = fastest_ms(run_fp8_gemm, &g, 3, 10);
    *tflops = cube_tflops(n, ms);
    if (at_limit) *limit_tflops = cube_tflops(n, at_limit_ms(run_fp8_gemm, &g, ms));
    dev_free(a), dev_free(b), dev_free(d), dev_free(scale_inv);
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

// Forward and backward TFLOP/s, FLOPs counted as layer_category_work counts them: in a burst
// into r->attn_*, and if at_limit at the power limit into r->limit_attn_*.
static void attention_rates(const LayerConfig *c, int at_limit, MeasuredRates *r) {
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
    const double fwd_ms = fastest_ms(run_attention_forward, &a, 5, 1);
    const double bwd_ms = fastest_ms(run_attention_backward, &a, 5, 1);
    r->attn_fwd_tflops = w.flops[CAT_ATTN_FWD] / (fwd_ms * 1e-3) / 1e12;
    r->attn_bwd_tflops = w.flops[CAT_ATTN_BWD] / (bwd_ms * 1e-3) / 1e12;
    if (at_limit) {
        r->limit_attn_fwd_tflops =
            w.flops[CAT_ATTN_FWD] / (at_limit_ms(run_attention_forward, &a, fwd_ms) * 1e-3) / 1e12;
        r->limit_attn_bwd_tflops =
            w.flops[CAT_ATTN_BWD] / (at_limit_ms(run_attention_backward, &a, bwd_ms) * 1e-3) / 1e12;
    }
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

MeasuredRates measure_rates(const LayerConfig *cfg, int fp8, int at_power_limit) {
    MeasuredRates r = {0};
    gemm_rates(cfg->dtype, at_power_limit, &r.gemm_tflops, &r.limit_gemm_tflops);
    if (fp8 && gpu_arch_has_fp8(gpu_effective_cc()))
        fp8_gemm_rates(cfg->dtype, at_power_limit, &r.fp8_gemm_tflops, &r.limit_fp8_gemm_tflops);
    attention_rates(cfg, at_power_limit, &r);
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
    if (!(r->limit_gemm_tflops > 0)) return;
    fprintf(f, "the same at the power limit (each run back to back %.0f s, then timed over %.0f s):\n",
            LIMIT_WARM_MS / 1000.0, LIMIT_TIMED_MS / 1000.0);
    snprintf(what, sizeof what, "GEMM %s, cuBLASLt %d^3", dtype_name(cfg->dtype), GEMM_N);
    print_rate(f, what, r->limit_gemm_tflops, "TFLOP/s");
    if (r->fp8_gemm_tflops > 0) print_rate(f, "GEMM FP8 E4M3", r->limit_fp8_gemm_tflops, "TFLOP/s");
    print_rate(f, "attention forward", r->limit_attn_fwd_tflops, "TFLOP/s");
    print_rate(f, "attention backward", r->limit_attn_bwd_tflops, "TFLOP/s");
}
