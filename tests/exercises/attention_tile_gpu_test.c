// Graded: exercise "attention_tile_gpu" (exercises/attention_tile_gpu.cu), chapter 04.
//
// Your kernel against the CPU reference attention (ref_attention_forward: the whole softmax row
// at once, in double) on fresh random fp16 q, k, v, and the logsumexp against its definition:
// ragged sequence lengths (not multiples of a query or key tile), odd head dims, the causal mask,
// one key, scores large enough that exp() overflows without the running maximum, and 32 heads of
// 2048 tokens, where the speed line compares your FLOP rate with cuBLAS's fp16 GEMM (tensor cores)
// and the reference solution's. Tolerances: o is stored in fp16 (2e-3, norm-wise); lse is an fp32
// sum against a double one (1e-4). Each test case is one point.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/layer.h"
#include "exercises/gpu_exercises.h"
#include "reference/reference.h"
#include "tests/exercises/exercise_solutions.h"
#include "tests/exercises/gpu_grading.h"
#include "tests/exercises/grading.h"
#include "tests/test_util.h"

typedef struct {
    int heads, seq, head_dim, causal;
    void *q, *k, *v, *o;
    float *lse;
} Problem;

static void run_yours(void *ctx) {
    Problem *p = ctx;
    ex_attention_forward(p->q, p->k, p->v, p->o, p->lse, p->heads, p->seq, p->head_dim, p->causal);
}

static void run_solution(void *ctx) {
    Problem *p = ctx;
    solution_attention_forward(p->q, p->k, p->v, p->o, p->lse, p->heads, p->seq, p->head_dim, p->causal);
}

// The reference for head h of q, k, v [heads, seq, d]: o_want [seq, d] and lse_want [seq].
static void reference_head(const float *q, const float *k, const float *v, int h, int seq, int d, int causal,
                           float *o_want, float *lse_want) {
    const size_t head = (size_t)h * seq * d;
    // ref_attention_forward reads the fused layout [seq, batch, heads, 3 d]: one head, batch 1.
    float *qkv = malloc((size_t)seq * 3 * d * sizeof(float)), *probs = malloc((size_t)seq * seq * sizeof(float));
    for (int i = 0; i < seq; i++) {
        memcpy(qkv + (size_t)i * 3 * d, q + head + (size_t)i * d, (size_t)d * sizeof(float));
        memcpy(qkv + (size_t)i * 3 * d + d, k + head + (size_t)i * d, (size_t)d * sizeof(float));
        memcpy(qkv + (size_t)i * 3 * d + 2 * d, v + head + (size_t)i * d, (size_t)d * sizeof(float));
    }
    ref_attention_forward(qkv, seq, 1, 1, d, 0.0f, causal, 0, 0, o_want, probs);
    for (int i = 0; i < seq; i++) {  // lse = log sum_j exp(s_ij), the largest score factored out
        const int keys = causal ? i + 1 : seq;
        double s_max = -INFINITY, sum = 0;
        double *s = malloc((size_t)keys * sizeof(double));
        for (int j = 0; j < keys; j++) {
            double dot = 0;
            for (int t = 0; t < d; t++) dot += (double)q[head + (size_t)i * d + t] * k[head + (size_t)j * d + t];
            s[j] = dot / sqrt((double)d);
            if (s[j] > s_max) s_max = s[j];
        }
        for (int j = 0; j < keys; j++) sum += exp(s[j] - s_max);
        lse_want[i] = (float)(s_max + log(sum));
        free(s);
    }
    free(qkv), free(probs);
}

// q, k uniform in [-range, range) (k = q if k_is_q: then each query's score with its own key is
// |q|^2 / sqrt(d), large), v in [-1, 1); the first and the last head are compared with the
// reference, the others only run.
static void check(int heads, int seq, int d, int causal, float range, int k_is_q, int time_it) {
    const int64_t n = (int64_t)heads * seq * d;
    float *q = random_floats(n, -range, range), *k = random_floats(n, -range, range);
    if (k_is_q) memcpy(k, q, (size_t)n * sizeof(float));
    float *v = random_floats(n, -1.0f, 1.0f);
    round_to_dtype(q, n, DTYPE_FP16), round_to_dtype(k, n, DTYPE_FP16), round_to_dtype(v, n, DTYPE_FP16);
    Problem p = {heads, seq, d, causal, gpu_upload_fp16(q, n), gpu_upload_fp16(k, n), gpu_upload_fp16(v, n),
                 gpu_alloc_poisoned((size_t)n * 2), gpu_alloc_poisoned((size_t)heads * seq * 4)};
    char what[160];
    snprintf(what, sizeof what, "ex_attention_forward, %d heads, seq %d, head_dim %d, causal %d, q%s in [%g, %g)",
             heads, seq, d, causal, k_is_q ? " = k" : " and k", -range, range);
    run_yours(&p);
    gpu_expect_no_error(what);
    float *o = malloc((size_t)n * sizeof(float)), *lse = malloc((size_t)heads * seq * sizeof(float));
    gpu_download_fp16(o, p.o, n);
    gpu_download_f32(lse, p.lse, (int64_t)heads * seq);
    float *o_want = malloc((size_t)seq * d * sizeof(float)), *lse_want = malloc((size_t)seq * sizeof(float));
    const int checked[2] = {0, heads - 1};
    for (int c = 0; c < (heads > 1 ? 2 : 1); c++) {
        const int h = checked[c];
        reference_head(q, k, v, h, seq, d, causal, o_want, lse_want);
        char name[224];
        snprintf(name, sizeof name, "o of head %d (rows: queries; %s)", h, what);
        expect_close(name, o + (size_t)h * seq * d, o_want, seq, d, 2e-3,
                     "each row of o is a weighted mean of v's rows: weights exp(s - m) / l");
        snprintf(name, sizeof name, "lse of head %d (%s)", h, what);
        expect_close(name, lse + (size_t)h * seq, lse_want, seq, 0, 1e-4, "lse = m + log(l), natural log");
    }
    if (time_it) {
        const double yours = gpu_time_us(run_yours, &p), reference = gpu_time_us(run_solution, &p);
        const double flops = 4.0 * heads * (double)seq * seq * d / (causal ? 2 : 1);  // QK^T and PV
        print_speed_line("your kernel", yours, reference, flops, gpu_gemm_flops_per_s(4096, 4096, 4096),
                         "cuBLAS's fp16 GEMM rate (4096^3, tensor cores)");
    }
    gpu_free(p.q), gpu_free(p.k), gpu_free(p.v), gpu_free(p.o), gpu_free(p.lse);
    free(q), free(k), free(v), free(o), free(lse), free(o_want), free(lse_want);
}

// 100 queries and keys: not a multiple of a query tile or a key tile.
static void test_ragged_sequence(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    check(3, 100, 64, 0, 1.0f, 0, 0);
}

// The causal mask, with 77 tokens and head_dim 40.
static void test_causal_odd_head_dim(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    check(2, 77, 40, 1, 1.0f, 0, 0);
}

// One key past a tile boundary (129), and a single token.
static void test_tile_edges(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    check(1, 129, 16, 0, 1.0f, 0, 0);
    check(2, 1, 8, 1, 1.0f, 0, 0);
}

// k = q in [-8, 8): a query's score with its own key is about 170, and exp(170) overflows fp32
// (exp(s - max) does not).
static void test_large_scores(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    check(2, 200, 64, 0, 8.0f, 1, 0);
}

// 32 heads of 2048 tokens (heads 0 and 31 compared): correct, and how fast.
static void test_many_heads_and_speed(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    check(32, 2048, 64, 0, 1.0f, 0, 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ragged_sequence),
        cmocka_unit_test(test_causal_odd_head_dim),
        cmocka_unit_test(test_tile_edges),
        cmocka_unit_test(test_large_scores),
        cmocka_unit_test(test_many_heads_and_speed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
