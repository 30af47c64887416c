// Graded: exercise "bias_gelu_gpu" (exercises/bias_gelu_gpu.cu), chapter 03.
//
// Your kernel against the CPU reference (x + bias, then ref_gelu_forward in double) on fresh
// random fp16 data: both outputs, pre (GELU's input, kept for the backward) and y, on ragged
// shapes (rows != cols, n not a multiple of a block), on inputs where tanh saturates, and on
// [8192 x 4096], where the speed line compares your kernel's bandwidth with a device-to-device
// copy's and the reference solution's. Tolerance 2e-3: fp16 storage rounds each value by up to
// 2^-11 relative. Each test case is one point.
#include <stdio.h>
#include <stdlib.h>

#include "common/core/layer.h"
#include "exercises/gpu_exercises.h"
#include "reference/reference.h"
#include "tests/exercises/exercise_solutions.h"
#include "tests/exercises/gpu_grading.h"
#include "tests/exercises/grading.h"
#include "tests/test_util.h"

typedef struct {
    int rows, cols;
    void *x, *bias, *pre, *y;
} Problem;

static void run_yours(void *ctx) {
    Problem *p = ctx;
    ex_bias_gelu(p->x, p->bias, p->pre, p->y, p->rows, p->cols);
}

static void run_solution(void *ctx) {
    Problem *p = ctx;
    solution_bias_gelu(p->x, p->bias, p->pre, p->y, p->rows, p->cols);
}

static void check(int rows, int cols, float range, int time_it) {
    const int64_t n = (int64_t)rows * cols;
    float *x = random_floats(n, -range, range), *bias = random_floats(cols, -1.0f, 1.0f);
    round_to_dtype(x, n, DTYPE_FP16), round_to_dtype(bias, cols, DTYPE_FP16);
    float *pre_want = malloc((size_t)n * sizeof(float)), *y_want = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) pre_want[i] = x[i] + bias[i % cols];
    ref_gelu_forward(pre_want, n, y_want);

    Problem p = {rows, cols, gpu_upload_fp16(x, n), gpu_upload_fp16(bias, cols), gpu_alloc_poisoned((size_t)n * 2),
                 gpu_alloc_poisoned((size_t)n * 2)};
    char what[128];
    snprintf(what, sizeof what, "ex_bias_gelu on [%d x %d], x in [%g, %g)", rows, cols, -range, range);
    run_yours(&p);
    gpu_expect_no_error(what);
    float *pre = malloc((size_t)n * sizeof(float)), *y = malloc((size_t)n * sizeof(float));
    gpu_download_fp16(pre, p.pre, n);
    gpu_download_fp16(y, p.y, n);
    char name[192];
    snprintf(name, sizeof name, "pre = x + bias (%s)", what);
    expect_close(name, pre, pre_want, rows, cols, 2e-3, "bias has one value per column: bias[c]");
    snprintf(name, sizeof name, "y = GELU(x + bias) (%s)", what);
    expect_close(name, y, y_want, rows, cols, 2e-3, "GELU(z) = 0.5 z (1 + tanh(0.7978845608 (z + 0.044715 z^3)))");

    if (time_it) {
        const double yours = gpu_time_us(run_yours, &p), reference = gpu_time_us(run_solution, &p);
        const double bytes = 3.0 * n * 2 + cols * 2.0;  // x read; pre and y written; bias
        print_speed_line("your kernel", yours, reference, bytes, gpu_copy_bytes_per_s((size_t)n * 2),
                         "copy bandwidth");
    }
    gpu_free(p.x), gpu_free(p.bias), gpu_free(p.pre), gpu_free(p.y);
    free(x), free(bias), free(pre_want), free(y_want), free(pre), free(y);
}

// 333 x 1000: n is not a multiple of 256, rows != cols.
static void test_ragged_shape(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    check(333, 1000, 3.0f, 0);
}

// More rows than columns (5), and an odd width (4099).
static void test_narrow_and_odd_rows(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    check(1000, 5, 3.0f, 0);
    check(7, 4099, 3.0f, 0);
}

// |z| up to 9: tanh saturates, GELU(z) -> z for large z and -> 0 for very negative z.
static void test_saturating_inputs(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    check(129, 264, 8.0f, 0);
}

// [tokens, hidden] = [8192, 4096]: correct, and how fast.
static void test_large_shape_and_speed(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    check(8192, 4096, 3.0f, 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ragged_shape),
        cmocka_unit_test(test_narrow_and_odd_rows),
        cmocka_unit_test(test_saturating_inputs),
        cmocka_unit_test(test_large_shape_and_speed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
