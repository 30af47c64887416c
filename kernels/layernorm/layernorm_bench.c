// LayerNorm bandwidth against a device-to-device copy, measured in the same run.
//
// Bytes counted are the fewest any implementation must move: inputs read once, outputs
// written once. Forward: x, gamma, beta in; y, mean, rstd out. Backward: x, dy, gamma, mean,
// rstd in; dx, dgamma, dbeta out. The copy counts bytes read plus bytes written.
//
//   layernorm_bench [--rows N] [--cols N]    default 8192 x 4096 (the quickstart's tokens x hidden)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/errors.h"
#include "common/core/flags.h"

#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu.h"
#include "kernels/layernorm/fast_layernorm.h"

typedef void (*Op)(void *ctx);

// Median of `reps` timed runs (each of `inner` calls), in milliseconds per call.
static double time_op(Op op, void *ctx, int inner) {
    enum { REPS = 15 };
    double t[REPS];
    cudaEvent_t a, b;
    CUDA_CHECK(cudaEventCreate(&a));
    CUDA_CHECK(cudaEventCreate(&b));
    for (int i = 0; i < 3; i++) op(ctx);  // warm-up
    for (int r = 0; r < REPS; r++) {
        CUDA_CHECK(cudaEventRecord(a, 0));
        for (int i = 0; i < inner; i++) op(ctx);
        CUDA_CHECK(cudaEventRecord(b, 0));
        CUDA_CHECK(cudaEventSynchronize(b));
        float ms;
        CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
        t[r] = ms / inner;
    }
    for (int i = 0; i < REPS; i++)  // insertion sort, then the middle one
        for (int j = i; j > 0 && t[j] < t[j - 1]; j--) {
            double s = t[j];
            t[j] = t[j - 1];
            t[j - 1] = s;
        }
    return t[REPS / 2];
}

typedef struct {
    int64_t rows;
    int cols;
    DType dtype;
    void *x, *dy, *y, *dx, *gamma, *beta, *dgamma, *dbeta, *ws, *copy_dst;
    float *mean, *rstd;
} Bench;

static void run_copy(void *p) {
    Bench *b = p;
    CUDA_CHECK(cudaMemcpyAsync(b->copy_dst, b->x, (size_t)b->rows * b->cols * 2, cudaMemcpyDeviceToDevice, 0));
}

static void run_forward(void *p) {
    Bench *b = p;
    layernorm_fast_forward(b->x, b->gamma, b->beta, b->y, b->mean, b->rstd, b->rows, b->cols, 1e-5f, b->dtype);
}

static void run_backward(void *p) {
    Bench *b = p;
    layernorm_fast_backward(b->dy, b->x, b->gamma, b->mean, b->rstd, NULL, b->dx, b->dgamma, b->dbeta, b->ws,
                            b->rows, b->cols, b->dtype);
}

static FlagKind bench_flag_kind(const char *name, void *ctx) {
    static const char *const NAMES[] = {"--rows", "--cols"};
    (void)ctx;
    return flag_is_one_of(name, NAMES, 2) ? FLAG_VALUE : FLAG_UNKNOWN;
}

int main(int argc, char **argv) {
    Bench b = {.rows = 8192, .cols = 4096, .dtype = DTYPE_FP16};
    FlagArg *flags = xcalloc((size_t)argc, sizeof(FlagArg));
    const int nflags = flags_split(argc, argv, bench_flag_kind, NULL, flags);
    if (nflags < 0) {
        printf("usage: layernorm_bench [--rows N] [--cols N]   (default 8192 x 4096)\n"
               "  LayerNorm forward and backward bandwidth against a device-to-device copy, fp16.\n"
               "  cols: a multiple of 8, at most %d. Needs a CUDA GPU.\n", LAYERNORM_FAST_MAX_COLS);
        return 0;
    }
    for (int i = 0; i < nflags; i++) {
        const char *f = flags[i].name, *v = flags[i].value;
        if (!strcmp(f, "--rows")) b.rows = parse_int_flag(f, v, 1, 1 << 24);
        else b.cols = (int)parse_int_flag(f, v, 8, LAYERNORM_FAST_MAX_COLS);
    }
    free(flags);
    const char *why = layernorm_fast_unsupported(b.cols);
    if (why) fail_user("--cols %d: %s", b.cols, why);
    gpu_require();
    int64_t n = b.rows * b.cols;
    float *host = xmalloc((size_t)n * sizeof(float));
    fill_uniform(host, n, -2.0f, 2.0f, 42, 1);  // random data: zeros would flatter the timing
    b.x = dev_upload(host, n, b.dtype);
    fill_uniform(host, n, -1.0f, 1.0f, 42, 2);
    b.dy = dev_upload(host, n, b.dtype);
    fill_uniform(host, b.cols, 0.5f, 1.5f, 42, 3);
    b.gamma = dev_upload(host, b.cols, b.dtype);
    b.beta = dev_upload(host, b.cols, b.dtype);
    b.y = dev_alloc((size_t)n * 2), b.dx = dev_alloc((size_t)n * 2), b.copy_dst = dev_alloc((size_t)n * 2);
    b.dgamma = dev_alloc((size_t)b.cols * 2), b.dbeta = dev_alloc((size_t)b.cols * 2);
    b.mean = dev_alloc((size_t)b.rows * 4), b.rstd = dev_alloc((size_t)b.rows * 4);
    b.ws = dev_alloc(layernorm_fast_backward_workspace_bytes(b.cols));
    free(host);

    double e = 2.0;  // bytes per element
    double copy_bytes = 2.0 * n * e;
    double fwd_bytes = 2.0 * n * e + 2.0 * b.cols * e + 2.0 * b.rows * 4;
    double bwd_bytes = 3.0 * n * e + b.cols * e + 2.0 * b.rows * 4 + 2.0 * b.cols * e;
    double t_copy = time_op(run_copy, &b, 20), t_fwd = time_op(run_forward, &b, 20),
           t_bwd = time_op(run_backward, &b, 20);
    double bw_copy = copy_bytes / (t_copy * 1e-3) / 1e12;
    printf("GPU: %s; LayerNorm on [%lld x %d] fp16\n", gpu_description(), (long long)b.rows, b.cols);
    printf("%-22s %10s %10s %12s\n", "", "time us", "TB/s", "% of copy");
    printf("%-22s %10.1f %10.2f %11.0f%%\n", "device-to-device copy", t_copy * 1e3, bw_copy, 100.0);
    double bw_fwd = fwd_bytes / (t_fwd * 1e-3) / 1e12, bw_bwd = bwd_bytes / (t_bwd * 1e-3) / 1e12;
    printf("%-22s %10.1f %10.2f %11.0f%%\n", "LayerNorm forward", t_fwd * 1e3, bw_fwd, 100 * bw_fwd / bw_copy);
    printf("%-22s %10.1f %10.2f %11.0f%%\n", "LayerNorm backward", t_bwd * 1e3, bw_bwd, 100 * bw_bwd / bw_copy);
    return 0;
}
