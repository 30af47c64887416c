// Graded: exercise "linear_cublaslt" (exercises/linear_cublaslt.c), chapter 02.
//
// Your Linear against the CPU reference (ref_linear_forward, double accumulation) on fresh
// random fp16 data: ragged shapes (tokens odd; in and out multiples of 8 but not of a GEMM
// tile; out != in, so a transpose that is wrong cannot pass by luck), a zero input (then y must
// be the bias, exactly), and the quickstart's QKV projection [8192 x 4096] x [4096 -> 12288]
// (16 of its rows compared), where the speed line compares your Linear's FLOP rate with cuBLAS's
// plain GEMM of the same shape. Tolerance 2e-3: fp16 inputs and output, fp32 accumulation.
// Each test case is one point.
#include <cublas_v2.h>
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
    int tokens, in, out;
    void *x, *w, *b, *y;
} Problem;

static void run_yours(void *ctx) {
    Problem *p = ctx;
    ex_linear_forward(p->x, p->w, p->b, p->y, p->tokens, p->in, p->out);
}

static void run_solution(void *ctx) {
    Problem *p = ctx;
    solution_linear_forward(p->x, p->w, p->b, p->y, p->tokens, p->in, p->out);
}

// Calls your Linear and fails, naming the status, if it did not succeed.
static void call(Problem *p, const char *what) {
    const int status = ex_linear_forward(p->x, p->w, p->b, p->y, p->tokens, p->in, p->out);
    if (status != 0)
        fail_msg("%s returned %d (%s): %s", what, status, cublasGetStatusName((cublasStatus_t)status),
                 status == CUBLAS_STATUS_INVALID_VALUE
                     ? "the shapes of op(A) [m x k], op(B) [k x n] and D [m x n] must agree, column-major: check "
                       "the transposes and each layout's rows, columns and leading dimension"
                     : status == CUBLAS_STATUS_NOT_SUPPORTED ? "no algorithm for these descriptors (or not written yet)"
                                                             : "see the cuBLASLt documentation of that status");
    gpu_expect_no_error(what);
}

// x uniform in [-x_range, x_range) (0: all zero), W and b in [-1, 1) / sqrt(in); rows of y
// compared: all, or `sample` of them.
static void check(int tokens, int in, int out, float x_range, int sample, int time_it) {
    const int64_t nx = (int64_t)tokens * in, nw = (int64_t)out * in, ny = (int64_t)tokens * out;
    const float wr = 1.0f / sqrtf((float)in);
    float *x = x_range > 0 ? random_floats(nx, -x_range, x_range) : calloc((size_t)nx, sizeof(float));
    float *w = random_floats(nw, -wr, wr), *b = random_floats(out, -1.0f, 1.0f);
    round_to_dtype(x, nx, DTYPE_FP16), round_to_dtype(w, nw, DTYPE_FP16), round_to_dtype(b, out, DTYPE_FP16);
    Problem p = {tokens, in, out, gpu_upload_fp16(x, nx), gpu_upload_fp16(w, nw), gpu_upload_fp16(b, out),
                 gpu_alloc_poisoned((size_t)ny * 2)};
    char what[160];
    snprintf(what, sizeof what, "ex_linear_forward, x [%d x %d], W [%d x %d]%s", tokens, in, out, in,
             x_range > 0 ? "" : ", x = 0");
    call(&p, what);
    float *y = malloc((size_t)ny * sizeof(float));
    gpu_download_fp16(y, p.y, ny);

    // The rows compared: all, or `sample` spread over the tokens.
    const int rows = sample ? sample : tokens;
    float *x_rows = malloc((size_t)rows * in * sizeof(float)), *y_rows = malloc((size_t)rows * out * sizeof(float));
    for (int r = 0; r < rows; r++) {
        const int t = sample ? (int)((int64_t)r * (tokens - 1) / (rows - 1)) : r;
        memcpy(x_rows + (size_t)r * in, x + (size_t)t * in, (size_t)in * sizeof(float));
        memcpy(y_rows + (size_t)r * out, y + (size_t)t * out, (size_t)out * sizeof(float));
    }
    float *want = malloc((size_t)rows * out * sizeof(float)), *no_bias = malloc((size_t)rows * out * sizeof(float));
    ref_linear_forward(x_rows, w, b, rows, in, out, want);
    ref_linear_forward(x_rows, w, NULL, rows, in, out, no_bias);
    const char *hint = x_range > 0 ? NULL : "with x = 0 every row of y is the bias: is the epilogue adding it "
                                            "(CUBLASLT_EPILOGUE_BIAS and CUBLASLT_MATMUL_DESC_BIAS_POINTER)?";
    if (x_range > 0 && relative_error(y_rows, no_bias, (int64_t)rows * out) < 2e-3)
        hint = "that is x W^T without the bias: set the epilogue CUBLASLT_EPILOGUE_BIAS and the BIAS_POINTER";
    for (int64_t i = 0; i < (int64_t)rows * out; i++)
        if (y_rows[i] != y_rows[i])
            hint = "y held NaN before the call: was it written? With beta != 0 cuBLASLt also reads it, as C";
    char name[224];
    snprintf(name, sizeof name, "y (%s%s)", what, sample ? ", rows sampled" : "");
    expect_close(name, y_rows, want, rows, out, 2e-3, hint);

    if (time_it) {
        const double yours = gpu_time_us(run_yours, &p), reference = gpu_time_us(run_solution, &p);
        print_speed_line("your Linear", yours, reference, 2.0 * tokens * (double)in * out,
                         gpu_gemm_flops_per_s(tokens, out, in), "cuBLAS's GEMM rate at this shape");
    }
    gpu_free(p.x), gpu_free(p.w), gpu_free(p.b), gpu_free(p.y);
    free(x), free(w), free(b), free(y), free(x_rows), free(y_rows), free(want), free(no_bias);
}

// 77 tokens, 72 -> 200 features.
static void test_ragged_shape(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    check(77, 72, 200, 1.0f, 0, 0);
}

// x = 0: y is the bias in every row, exactly.
static void test_zero_input_gives_the_bias(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    check(33, 64, 136, 0.0f, 0, 0);
}

// A long reduction into few outputs, and many tokens into a wide layer.
static void test_deep_and_wide(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    check(5, 1024, 8, 1.0f, 0, 0);
    check(1000, 264, 520, 1.0f, 0, 0);
}

// The quickstart's QKV projection: 8192 tokens, 4096 -> 12288.
static void test_quickstart_qkv_and_speed(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    check(8192, 4096, 12288, 1.0f, 16, 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ragged_shape),
        cmocka_unit_test(test_zero_input_gives_the_bias),
        cmocka_unit_test(test_deep_and_wide),
        cmocka_unit_test(test_quickstart_qkv_and_speed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
