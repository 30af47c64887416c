// Flash attention's forward and backward TFLOP/s at the quickstart's attention shape.
//
// FLOPs: forward 4 b s^2 heads d (two matrix products), backward 2.5x forward (five), both
// halved when causal. CUDA events, median of 20 after 3 warm-ups, random inputs. Every set of
// kernels is timed (attention_set_kernels): the best this GPU runs (Hopper's wgmma ones on an
// H100), the mma.sync ones with their largest tiles (an A100's), and the mma.sync ones with
// the tiles of a 99 KiB GPU (sm_86, sm_89). For the first set also the deterministic backward
// (AttentionProblem.deterministic: dQ summed in a fixed order), and its time over the default's.
//
//   attention_bench [--batch N] [--heads N] [--seq N] [--dtype fp16|bf16]   default 4 32 2048 fp16
//   attention_bench --fp8 [same flags]   only d 128 without dropout or mask: the opt-in FP8 forward
//       (attention_fp8.h; E4M3 Q, K, V^T, ctx in --dtype) with 128- and 192-key tiles, each with
//       one block per 128 queries and with persistent CTAs (attention_fp8_set_block_n,
//       attention_fp8_set_persistent), beside the best 16-bit forward, TFLOP/s counted the same
//       way (4 b s^2 heads d)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/errors.h"
#include "common/core/flags.h"
#include "common/gpu/cuda_check.h"
#include "common/fp8/fp8_format.h"
#include "common/gpu/gpu.h"
#include "kernels/attention/attention.h"
#include "kernels/attention/attention_fp8.h"

typedef struct {
    AttentionProblem problem;
    AttentionDropout dropout;
    void *qkv, *ctx, *dctx, *dqkv, *workspace;
    float *lse;
} Case;

static void fwd(const Case *c) { attention_forward(&c->problem, &c->dropout, c->qkv, c->ctx, c->lse); }

static void bwd(const Case *c) {
    attention_backward(&c->problem, &c->dropout, c->qkv, c->ctx, c->dctx, c->lse, c->dqkv, c->workspace);
}

static void bwd_deterministic(const Case *c) {
    AttentionProblem p = c->problem;
    p.deterministic = 1;
    attention_backward(&p, &c->dropout, c->qkv, c->ctx, c->dctx, c->lse, c->dqkv, c->workspace);
}

static int cmp(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static double median_ms(void (*op)(const Case *), const Case *c) {
    enum { N = 20 };
    float t[N];
    cudaEvent_t a, b;
    CUDA_CHECK(cudaEventCreate(&a));
    CUDA_CHECK(cudaEventCreate(&b));
    for (int i = 0; i < 3; i++) op(c);
    for (int i = 0; i < N; i++) {
        CUDA_CHECK(cudaEventRecord(a, 0));
        op(c);
        CUDA_CHECK(cudaEventRecord(b, 0));
        CUDA_CHECK(cudaEventSynchronize(b));
        CUDA_CHECK(cudaEventElapsedTime(&t[i], a, b));
    }
    qsort(t, N, sizeof(float), cmp);
    return t[N / 2];
}

static const AttentionKernels SETS[] = {ATTENTION_KERNELS_BEST, ATTENTION_KERNELS_MMA_SYNC,
                                        ATTENTION_KERNELS_MMA_SYNC_SMALL_TILES};
enum { NUM_SETS = 3 };

static FlagKind bench_flag_kind(const char *name, void *ctx) {
    static const char *const NAMES[] = {"--batch", "--heads", "--seq", "--dtype"};
    (void)ctx;
    if (!strcmp(name, "--fp8")) return FLAG_SWITCH;
    return flag_is_one_of(name, NAMES, 4) ? FLAG_VALUE : FLAG_UNKNOWN;
}

// The FP8 forward's arguments (attention_forward_fp8), for median_ms through a Case.
static struct {
    AttentionFp8Problem problem;
    uint8_t *q, *k, *vt;
    float *scale_inv;  // device: q's, k's, v's
    void *ctx;
    float *lse;
} fp8_case;

static void fwd_fp8(const Case *c) {
    (void)c;
    attention_forward_fp8(&fp8_case.problem, fp8_case.q, fp8_case.k, fp8_case.vt, fp8_case.scale_inv,
                          fp8_case.scale_inv + 1, fp8_case.scale_inv + 2, fp8_case.ctx, fp8_case.lse);
}

// E4M3 codes of uniform values in [-1, 1) times 448 (the whole range; no NaN codes).
static uint8_t *random_e4m3_device(int64_t n, uint64_t seed) {
    float *x = xmalloc((size_t)n * sizeof(float));
    fill_uniform(x, n, -448.0f, 448.0f, seed, 1);
    uint8_t *codes = xmalloc((size_t)n);
    for (int64_t i = 0; i < n; i++) codes[i] = fp8_encode(x[i], FP8_E4M3);
    uint8_t *dev = dev_alloc((size_t)n);
    CUDA_CHECK(cudaMemcpy(dev, codes, (size_t)n, cudaMemcpyHostToDevice));
    free(x), free(codes);
    return dev;
}

// A case's problem (stops with a message if attention cannot run it) and its buffers: qkv of
// uniform values in [-1, 1), ctx and lse; with_backward also dctx (qkv's first values) and dqkv.
static Case new_case(int batch, int heads, int seq, int d, DType dtype, int with_backward) {
    const int64_t nqkv = (int64_t)seq * batch * heads * 3 * d, nctx = nqkv / 3;
    float *h = xmalloc((size_t)nqkv * sizeof(float));
    fill_uniform(h, nqkv, -1.0f, 1.0f, 5, 1);
    Case c = {.problem = {.seq = seq, .batch = batch, .heads = heads, .head_dim = d, .dtype = dtype}};
    const char *why = attention_unsupported(&c.problem);
    if (why) fail_user("%s", why);
    c.qkv = dev_upload(h, nqkv, dtype);
    if (with_backward) c.dctx = dev_upload(h, nctx, dtype), c.dqkv = dev_alloc((size_t)nqkv * 2);
    free(h);
    c.ctx = dev_alloc((size_t)nctx * 2);
    c.lse = dev_alloc((size_t)seq * batch * heads * sizeof(float));
    return c;
}

// --fp8: the 16-bit forward (set A, d 128, neither dropping nor causal) and the FP8 forward.
static void bench_fp8(int batch, int heads, int seq, DType dtype) {
    const int d = 128;
    const double flops = 4.0 * batch * (double)seq * seq * heads * d;
    const int64_t nctx = (int64_t)seq * batch * heads * d;
    Case c = new_case(batch, heads, seq, d, dtype, 0);
    attention_set_kernels(ATTENTION_KERNELS_BEST);
    const double ms16 = median_ms(fwd, &c);

    fp8_case.problem = (AttentionFp8Problem){.seq = seq, .batch = batch, .heads = heads, .head_dim = d, .dtype = dtype};
    const char *why = attention_fp8_unsupported(&fp8_case.problem);
    if (why) fail_user("%s", why);
    const int64_t vt_row = attention_fp8_vt_row_stride(&fp8_case.problem);
    fp8_case.q = random_e4m3_device(nctx, 6), fp8_case.k = random_e4m3_device(nctx, 7);
    fp8_case.vt = random_e4m3_device((int64_t)batch * heads * d * vt_row, 8);
    const float scale_inv[3] = {1.0f / 448.0f, 1.0f / 448.0f, 1.0f / 448.0f};  // values in [-1, 1)
    fp8_case.scale_inv = dev_alloc(sizeof scale_inv);
    CUDA_CHECK(cudaMemcpy(fp8_case.scale_inv, scale_inv, sizeof scale_inv, cudaMemcpyHostToDevice));
    fp8_case.ctx = c.ctx, fp8_case.lse = c.lse;
    printf("d 128, no dropout, not causal, ctx in %s: forward ms TFLOP/s\n", dtype_name(dtype));
    printf("  %-52s %8.3f %7.0f\n", attention_kernel_name(ATTENTION_FORWARD, d), ms16, flops / ms16 / 1e9);
    // The FP8 forward's launches: 128- and 192-key tiles (attention_fp8_set_block_n; a width
    // that does not fit the ring depth in force is skipped: attention_fp8_block_n_fits), each with
    // one block per 128 queries and with persistent CTAs (attention_fp8_set_persistent); the
    // settings are restored after.
    const int previous_block_n = attention_fp8_set_block_n(128), previous_persistent = attention_fp8_set_persistent(0);
    for (int block_n = 128; block_n <= 192; block_n += 64) {
        if (!attention_fp8_block_n_fits(block_n)) {
            printf("  (%d-key tiles: do not fit the K/V ring depth ATTENTION_FP8_STAGES sets)\n", block_n);
            continue;
        }
        attention_fp8_set_block_n(block_n);
        for (int persistent = 0; persistent <= 1; persistent++) {
            attention_fp8_set_persistent(persistent);
            const double ms8 = median_ms(fwd_fp8, &c);
            char name[64];
            snprintf(name, sizeof name, "FP8 E4M3 forward, %d-key tiles%s", block_n, persistent ? ", persistent" : "");
            printf("  %-52s %8.3f %7.0f   (%.2fx the 16-bit forward's speed)\n", name, ms8, flops / ms8 / 1e9,
                   ms16 / ms8);
        }
    }
    attention_fp8_set_block_n(previous_block_n), attention_fp8_set_persistent(previous_persistent);
    dev_free(c.qkv), dev_free(c.ctx), dev_free(c.lse);
    dev_free(fp8_case.q), dev_free(fp8_case.k), dev_free(fp8_case.vt), dev_free(fp8_case.scale_inv);
}

int main(int argc, char **argv) {
    int batch = 4, heads = 32, seq = 2048;
    DType dtype = DTYPE_FP16;
    int fp8 = 0;
    static const char *const DTYPES[] = {"fp16", "bf16"};
    FlagArg *flags = xcalloc((size_t)argc, sizeof(FlagArg));
    const int n = flags_split(argc, argv, bench_flag_kind, NULL, flags);
    if (n < 0) {
        printf("usage: attention_bench [--batch N] [--heads N] [--seq N] [--dtype fp16|bf16] [--fp8]   (default 4 32 2048 "
               "fp16)\n"
               "  Flash attention's forward and backward TFLOP/s at head dims 128 and 64, without and with\n"
               "  dropout and causal, for every set of kernels (A: the best here, B: mma.sync, C: mma.sync\n"
               "  with small tiles). Needs a CUDA GPU.\n"
               "  --fp8: only the FP8 (E4M3) forward beside the 16-bit one, d 128 (needs an sm_90a GPU).\n");
        return 0;
    }
    for (int i = 0; i < n; i++) {
        const char *f = flags[i].name, *v = flags[i].value;
        if (!strcmp(f, "--fp8")) fp8 = 1;
        else if (!strcmp(f, "--batch")) batch = (int)parse_int_flag(f, v, 1, 1 << 16);
        else if (!strcmp(f, "--heads")) heads = (int)parse_int_flag(f, v, 1, 1 << 12);
        else if (!strcmp(f, "--seq")) seq = (int)parse_int_flag(f, v, 1, 1 << 20);
        else dtype = (DType)parse_choice_flag(f, v, DTYPES, 2);
    }
    free(flags);
    attention_require_valid_switches();  // a bad ATTENTION_* value, before the GPU
    gpu_require_valid_switches();
    gpu_require();
    printf("GPU: %s; flash attention, %s, batch %d, heads %d, seq %d\n", gpu_description(), dtype_name(dtype), batch,
           heads, seq);
    if (fp8) {
        bench_fp8(batch, heads, seq, dtype);
        return 0;
    }
    int dims[2] = {128, 64};
    for (int di = 0; di < 2; di++) {
        for (int k = 0; k < NUM_SETS; k++) {
            attention_set_kernels(SETS[k]);
            printf("d %d, set %c: %s; %s\n", dims[di], 'A' + k, attention_kernel_name(ATTENTION_FORWARD, dims[di]),
                   attention_kernel_name(ATTENTION_BACKWARD, dims[di]));
        }
    }
    printf("%4s %8s %7s | %22s | %22s | %20s | %20s | %26s\n", "", "", "", "A: forward ms TFLOP/s",
           "A: backward ms TFLOP/s", "B: TFLOP/s fwd  bwd", "C: TFLOP/s fwd  bwd", "A: deterministic bwd ms  x");
    printf("%4s %8s %7s |\n", "d", "dropout", "causal");
    for (int di = 0; di < 2; di++) {
        int d = dims[di];
        Case c = new_case(batch, heads, seq, d, dtype, 1);
        AttentionProblem deterministic = c.problem;  // the larger workspace serves both backwards
        deterministic.deterministic = 1;
        c.workspace = dev_alloc(attention_backward_workspace_bytes(&deterministic));
        for (int variant = 0; variant < 3; variant++) {
            c.dropout = (AttentionDropout){.p = variant == 1 ? 0.1f : 0.0f, .seed = 1234, .offset = 0};
            c.problem.causal = variant == 2;
            double flops = 4.0 * batch * (double)seq * seq * heads * d * (c.problem.causal ? 0.5 : 1.0);
            double f_ms[NUM_SETS], b_ms[NUM_SETS];
            for (int k = NUM_SETS - 1; k >= 0; k--) {  // the default set last, as before
                attention_set_kernels(SETS[k]);
                f_ms[k] = median_ms(fwd, &c), b_ms[k] = median_ms(bwd, &c);
            }
            const double det_ms = median_ms(bwd_deterministic, &c);
            printf("%4d %8.1f %7d | %11.3f %10.0f | %12.3f %9.0f | %12.0f %7.0f | %12.0f %7.0f | %19.3f %5.2f\n", d,
                   c.dropout.p, c.problem.causal, f_ms[0], flops / f_ms[0] / 1e9, b_ms[0], 2.5 * flops / b_ms[0] / 1e9,
                   flops / f_ms[1] / 1e9, 2.5 * flops / b_ms[1] / 1e9, flops / f_ms[2] / 1e9,
                   2.5 * flops / b_ms[2] / 1e9, det_ms, det_ms / b_ms[0]);
        }
        dev_free(c.qkv), dev_free(c.dctx), dev_free(c.ctx), dev_free(c.dqkv), dev_free(c.lse), dev_free(c.workspace);
    }
    return 0;
}
