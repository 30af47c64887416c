// Each of the layer's GEMMs with an epilogue, three ways, in one run (issue 21):
//   fused      the GEMM with its cuBLASLt epilogue, as the modules run it by default
//   plain      the same GEMM without the epilogue (the floor the epilogue adds to)
//   separate   the plain GEMM, then the kernel(s) that do the epilogue's work
//              (kernels/fused/bias_epilogue.h, gelu_backward_strided): EPILOGUE_<KIND>=kernel
// at the quickstart's shapes by default (tokens 8192, hidden 4096, ffn 16384). Each variant is
// timed alone with CUDA events, the three interleaved in every repetition (so clock drift hits
// them alike), after warm-up runs; the table has the medians, and which way is faster.
// The algorithm is cuBLASLt's heuristic's first choice, or the autotuner's under GEMM_AUTOTUNE=1,
// as in the steps.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/errors.h"
#include "common/core/flags.h"
#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu.h"
#include "kernels/fused/bias_epilogue.h"
#include "kernels/fused/elementwise.h"
#include "modules/gemm.h"

// What the separate way runs after the plain GEMM.
typedef enum {
    AFTER_BIAS_ADD,        // bias_add_rows on D
    AFTER_BIAS_GELU,       // bias_gelu_forward: aux += bias, out = GELU(aux) (the plain GEMM wrote aux)
    AFTER_DGELU,           // gelu_backward_strided on D, in place (aux the pre-activation)
    AFTER_DGELU_BIAS_GRAD, // the same, then bias_grad_columns of D
    AFTER_BIAS_GRAD,       // bias_grad_columns of B (dy [k rows, n cols])
} After;

typedef struct {
    const char *name;
    Gemm fused;  // with the epilogue; plain and separate are derived from it
    After after;
} Case;

typedef struct {
    DType dtype;
    void *workspace;  // bias_grad_columns's
} Context;

static Gemm plain_of(const Gemm *fused) {
    Gemm g = *fused;
    g.epilogue = GEMM_EPILOGUE_NONE;
    g.bias = NULL, g.aux = NULL, g.aux_ld = 0;
    return g;
}

static void run_separate(const Case *c, const Context *x) {
    const Gemm *f = &c->fused;
    Gemm g = plain_of(f);
    if (c->after == AFTER_BIAS_GELU) g.d = f->aux;  // the GEMM writes the pre-activation
    gemm_run(&g);
    const int64_t rows = g.n;  // D is column-major m x n: row-major [n, m]
    const int cols = (int)g.m;
    switch (c->after) {
        case AFTER_BIAS_ADD: bias_add_rows(g.d, f->bias, rows, cols, x->dtype); break;
        case AFTER_BIAS_GELU: bias_gelu_forward(f->aux, f->bias, f->d, rows, cols, x->dtype); break;
        case AFTER_DGELU:
        case AFTER_DGELU_BIAS_GRAD:
            gelu_backward_strided(g.d, cols, f->aux, cols, g.d, cols, rows, cols, x->dtype);
            if (c->after == AFTER_DGELU_BIAS_GRAD) bias_grad_columns(g.d, rows, cols, f->bias, x->workspace, x->dtype);
            break;
        case AFTER_BIAS_GRAD:  // B is dy stored [n x k] column-major: row-major [k tokens, n]
            bias_grad_columns(g.b, g.k, (int)g.n, f->bias, x->workspace, x->dtype);
            break;
    }
}

enum { FUSED, PLAIN, SEPARATE, WAYS };

static void run_way(int way, const Case *c, const Context *x) {
    if (way == FUSED) gemm_run(&c->fused);
    else if (way == PLAIN) {
        const Gemm g = plain_of(&c->fused);
        gemm_run(&g);
    } else run_separate(c, x);
}

static int compare_doubles(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// Medians (ms) of the three ways, each run timed alone, interleaved per repetition.
static void time_case(const Case *c, const Context *x, int warmup, int reps, double median[WAYS]) {
    cudaEvent_t start, stop;
    CUDA_CHECK(cudaEventCreate(&start));
    CUDA_CHECK(cudaEventCreate(&stop));
    double *t[WAYS];
    for (int w = 0; w < WAYS; w++) t[w] = xmalloc((size_t)reps * sizeof(double));
    for (int i = 0; i < warmup; i++)
        for (int w = 0; w < WAYS; w++) run_way(w, c, x);
    for (int r = 0; r < reps; r++) {
        for (int w = 0; w < WAYS; w++) {
            CUDA_CHECK(cudaEventRecord(start, 0));
            run_way(w, c, x);
            CUDA_CHECK(cudaEventRecord(stop, 0));
            CUDA_CHECK(cudaEventSynchronize(stop));
            float ms;
            CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
            t[w][r] = ms;
        }
    }
    for (int w = 0; w < WAYS; w++) {
        qsort(t[w], (size_t)reps, sizeof(double), compare_doubles);
        median[w] = reps % 2 ? t[w][reps / 2] : 0.5 * (t[w][reps / 2 - 1] + t[w][reps / 2]);
        free(t[w]);
    }
    CUDA_CHECK(cudaEventDestroy(start));
    CUDA_CHECK(cudaEventDestroy(stop));
}

static void *random_dev(int64_t n, float range, uint64_t stream, DType dt) {
    float *h = xmalloc((size_t)n * sizeof(float));
    fill_uniform(h, n, -range, range, 7, stream);  // random data: zeros would flatter the GEMMs
    void *d = dev_upload(h, n, dt);
    free(h);
    return d;
}

static const char USAGE[] =
    "usage: epilogue_bench [--tokens N] [--hidden N] [--ffn N] [--dtype fp16|bf16] [--reps N] [--warmup N]\n"
    "                      [--deterministic]\n"
    "  Each GEMM of the layer that has a cuBLASLt epilogue, timed three ways in one run: with the\n"
    "  epilogue (fused), without it (plain), and plain + the kernel(s) doing the epilogue's work\n"
    "  (separate: what EPILOGUE_BIAS/GELU/DGELU/BGRAD=kernel run, modules/linear.h). Median of\n"
    "  --reps runs each (default 21) after --warmup runs (default 3), CUDA events. Defaults: the\n"
    "  quickstart's tokens 8192, hidden 4096, ffn 16384, fp16. --deterministic: the GEMMs as\n"
    "  under the steps' --deterministic. GEMM_AUTOTUNE=1 autotunes, as in the steps. Needs a CUDA GPU.\n";

static FlagKind bench_flag_kind(const char *name, void *ctx) {
    static const char *const VALUES[] = {"--tokens", "--hidden", "--ffn", "--dtype", "--reps", "--warmup"};
    (void)ctx;
    if (!strcmp(name, "--deterministic")) return FLAG_SWITCH;
    return flag_is_one_of(name, VALUES, 6) ? FLAG_VALUE : FLAG_UNKNOWN;
}

int main(int argc, char **argv) {
    int64_t t = 8192, h = 4096, f = 16384;
    int reps = 21, warmup = 3;
    DType dt = DTYPE_FP16;
    FlagArg *flags = xcalloc((size_t)argc + 1, sizeof(FlagArg));
    const int nflags = flags_split(argc, argv, bench_flag_kind, NULL, flags);
    if (nflags < 0) {
        fputs(USAGE, stdout);
        return 0;
    }
    for (int i = 0; i < nflags; i++) {
        const char *n = flags[i].name, *v = flags[i].value;
        static const char *const DTYPES[] = {"fp16", "bf16"};
        if (!strcmp(n, "--tokens")) t = parse_int_flag(n, v, 8, 1 << 20);
        else if (!strcmp(n, "--hidden")) h = parse_int_flag(n, v, 8, 1 << 16);
        else if (!strcmp(n, "--ffn")) f = parse_int_flag(n, v, 8, 1 << 18);
        else if (!strcmp(n, "--dtype")) dt = parse_choice_flag(n, v, DTYPES, 2) ? DTYPE_BF16 : DTYPE_FP16;
        else if (!strcmp(n, "--reps")) reps = (int)parse_int_flag(n, v, 1, 10000);
        else if (!strcmp(n, "--warmup")) warmup = (int)parse_int_flag(n, v, 0, 1000);
        else gemm_set_deterministic(1);
    }
    free(flags);
    if (h % 8 || f % 8) fail_user("--hidden and --ffn must be multiples of 8 (16-byte rows), got %lld and %lld",
                                  (long long)h, (long long)f);
    gpu_require();
    const size_t e = dtype_bytes(dt);
    // The layer's operands (random), and outputs.
    void *x_h = random_dev(t * h, 1.0f, 1, dt);  // LN outputs, ctx: every [T, hidden] input
    void *w_qkv = random_dev(3 * h * h, 0.02f, 2, dt), *w_proj = random_dev(h * h, 0.02f, 3, dt);
    void *w1 = random_dev(f * h, 0.02f, 4, dt), *w2 = random_dev(h * f, 0.02f, 5, dt);
    void *act = random_dev(t * f, 1.0f, 6, dt);         // GELU's output: FC2's input
    void *aux = random_dev(t * f, 2.0f, 7, dt);         // FC1's pre-activation
    void *d_fc1 = random_dev(t * f, 0.01f, 8, dt);      // FC1's output gradient
    void *dy_h = random_dev(t * h, 0.01f, 9, dt);       // FC2's, Proj's output gradient
    void *dy_qkv = random_dev(t * 3 * h, 0.01f, 10, dt);
    void *resid = random_dev(t * h, 1.0f, 11, dt);
    const int64_t widest = f > 3 * h ? f : 3 * h;
    void *bias = random_dev(widest, 0.5f, 12, dt), *dbias = dev_alloc((size_t)widest * e);
    void *out_f = dev_alloc((size_t)t * f * e), *out_h = dev_alloc((size_t)t * h * e);
    void *out_qkv = dev_alloc((size_t)t * 3 * h * e), *dw = dev_alloc((size_t)widest * h * e);
    const Context ctx = {.dtype = dt, .workspace = dev_alloc(bias_grad_workspace_bytes((int)widest))};
    // In cuBLASLt's column-major terms, as modules/linear.c builds them: fprop D [out x T] =
    // W^T... (trans_a), dgrad D [in x T] = W dY, wgrad D [in x out] = X dY^T (trans_b).
    const Case cases[] = {
        {"QKV fprop +bias", {.trans_a = 1, .m = 3 * h, .n = t, .k = h, .a = w_qkv, .lda = h, .b = x_h, .ldb = h,
                             .d = out_qkv, .ldd = 3 * h, .epilogue = GEMM_EPILOGUE_BIAS, .bias = bias}, AFTER_BIAS_ADD},
        {"Proj fprop +bias (02/03)", {.trans_a = 1, .m = h, .n = t, .k = h, .a = w_proj, .lda = h, .b = x_h,
                                      .ldb = h, .d = out_h, .ldd = h, .epilogue = GEMM_EPILOGUE_BIAS, .bias = bias},
         AFTER_BIAS_ADD},
        {"FC1 fprop +bias+GELU+aux", {.trans_a = 1, .m = f, .n = t, .k = h, .a = w1, .lda = h, .b = x_h, .ldb = h,
                                      .d = out_f, .ldd = f, .epilogue = GEMM_EPILOGUE_GELU_AUX_BIAS, .bias = bias,
                                      .aux = aux, .aux_ld = f}, AFTER_BIAS_GELU},
        {"FC2 fprop +bias+residual", {.trans_a = 1, .m = h, .n = t, .k = f, .a = w2, .lda = f, .b = act, .ldb = f,
                                      .c = resid, .d = out_h, .ldd = h, .epilogue = GEMM_EPILOGUE_BIAS, .bias = bias},
         AFTER_BIAS_ADD},
        {"FC2 dgrad +dGELU", {.m = f, .n = t, .k = h, .a = w2, .lda = f, .b = dy_h, .ldb = h, .d = out_f, .ldd = f,
                              .epilogue = GEMM_EPILOGUE_DGELU, .aux = aux, .aux_ld = f}, AFTER_DGELU},
        {"FC2 dgrad +dGELU+bgrad", {.m = f, .n = t, .k = h, .a = w2, .lda = f, .b = dy_h, .ldb = h, .d = out_f,
                                    .ldd = f, .epilogue = GEMM_EPILOGUE_DGELU_BGRAD, .bias = dbias, .aux = aux,
                                    .aux_ld = f}, AFTER_DGELU_BIAS_GRAD},
        {"QKV wgrad +bgradB", {.trans_b = 1, .m = h, .n = 3 * h, .k = t, .a = x_h, .lda = h, .b = dy_qkv,
                               .ldb = 3 * h, .d = dw, .ldd = h, .epilogue = GEMM_EPILOGUE_BGRADB, .bias = dbias},
         AFTER_BIAS_GRAD},
        {"Proj wgrad +bgradB", {.trans_b = 1, .m = h, .n = h, .k = t, .a = x_h, .lda = h, .b = dy_h, .ldb = h,
                                .d = dw, .ldd = h, .epilogue = GEMM_EPILOGUE_BGRADB, .bias = dbias}, AFTER_BIAS_GRAD},
        {"FC1 wgrad +bgradB", {.trans_b = 1, .m = h, .n = f, .k = t, .a = x_h, .lda = h, .b = d_fc1, .ldb = f,
                               .d = dw, .ldd = h, .epilogue = GEMM_EPILOGUE_BGRADB, .bias = dbias}, AFTER_BIAS_GRAD},
        {"FC2 wgrad +bgradB", {.trans_b = 1, .m = f, .n = h, .k = t, .a = act, .lda = f, .b = dy_h, .ldb = h,
                               .d = dw, .ldd = f, .epilogue = GEMM_EPILOGUE_BGRADB, .bias = dbias}, AFTER_BIAS_GRAD},
    };
    printf("GPU: %s; %s, fp32 accumulation; tokens %lld, hidden %lld, ffn %lld; median of %d (warm-up %d)%s\n",
           gpu_description(), dtype_name(dt), (long long)t, (long long)h, (long long)f, reps, warmup,
           gemm_deterministic() ? "; deterministic" : "");
    printf("%-26s %9s %9s %9s %9s %9s %9s  %s\n", "GEMM", "fused", "plain", "separate", "epi cost", "kernels",
           "sep-fus", "faster");
    printf("%-26s %9s %9s %9s %9s %9s %9s\n", "", "ms", "ms", "ms", "fus-pln", "sep-pln", "ms");
    double sum[WAYS] = {0};
    for (size_t i = 0; i < COUNT_OF(cases); i++) {
        Case c = cases[i];
        c.fused.dtype = dt;
        double ms[WAYS];
        time_case(&c, &ctx, warmup, reps, ms);
        for (int w = 0; w < WAYS; w++) sum[w] += ms[w];
        printf("%-26s %9.3f %9.3f %9.3f %+9.3f %+9.3f %+9.3f  %s\n", c.name, ms[FUSED], ms[PLAIN], ms[SEPARATE],
               ms[FUSED] - ms[PLAIN], ms[SEPARATE] - ms[PLAIN], ms[SEPARATE] - ms[FUSED],
               ms[SEPARATE] < ms[FUSED] ? "separate" : "fused");
    }
    printf("%-26s %9.3f %9.3f %9.3f %+9.3f %+9.3f %+9.3f\n", "sum (not one layer's mix)", sum[FUSED], sum[PLAIN],
           sum[SEPARATE], sum[FUSED] - sum[PLAIN], sum[SEPARATE] - sum[PLAIN], sum[SEPARATE] - sum[FUSED]);
    printf("epi cost: what the epilogue adds to the plain GEMM; kernels: what the separate kernels add;\n"
           "sep-fus < 0: the separate way is faster for that GEMM. Step 04 uses: QKV fprop +bias, FC1 +GELU,\n"
           "FC2 +bias+residual, FC2 dgrad +dGELU, the four wgrads +bgradB (Proj fprop has no bias there).\n");
    void *bufs[] = {x_h, w_qkv, w_proj, w1, w2, act, aux, d_fc1, dy_h, dy_qkv, resid, bias, dbias, out_f, out_h,
                    out_qkv, dw, ctx.workspace};
    dev_free_all(bufs, COUNT_OF(bufs));
    return 0;
}
