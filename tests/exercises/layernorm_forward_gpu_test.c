// Graded: exercise "layernorm_forward_gpu" (exercises/layernorm_forward_gpu.cu), chapter 02.
//
// Your kernel against the CPU reference (ref_layernorm_forward, double accumulation) on fresh
// random fp16 data: y, mean and rstd, on ragged shapes (rows not a multiple of a block's rows,
// columns not a multiple of 32, rows narrower than a warp), on data whose mean is large next
// to its spread, and at the quickstart's [8192 x 4096], where the speed line compares your
// kernel's bandwidth with a device-to-device copy's and the reference solution's.
//
// Tolerances: y is stored in fp16 (relative rounding up to 2^-11 per element), so 2e-3 norm-wise;
// mean and rstd are fp32 sums of up to 4096 values against double ones: 1e-3. A wrong formula
// or an element left unwritten is off by far more. Each test case is one point.
#include <stdio.h>
#include <stdlib.h>

#include "common/core/layer.h"
#include "exercises/gpu_exercises.h"
#include "reference/reference.h"
#include "tests/exercises/exercise_solutions.h"
#include "tests/exercises/gpu_grading.h"
#include "tests/exercises/grading.h"
#include "tests/test_util.h"

static const float EPS = 1e-5f;

typedef struct {
    int rows, cols;
    void *x, *gamma, *beta, *y;
    float *mean, *rstd;
} Problem;

static void run_yours(void *ctx) {
    Problem *p = ctx;
    ex_layernorm_forward(p->x, p->gamma, p->beta, p->y, p->mean, p->rstd, p->rows, p->cols, EPS);
}

static void run_solution(void *ctx) {
    Problem *p = ctx;
    solution_layernorm_forward(p->x, p->gamma, p->beta, p->y, p->mean, p->rstd, p->rows, p->cols, EPS);
}

// x uniform in [center - spread, center + spread), rounded to fp16 as the GPU sees it.
static void check(int rows, int cols, float center, float spread, int time_it, const char *hint) {
    const int64_t n = (int64_t)rows * cols;
    float *x = random_floats(n, center - spread, center + spread), *gamma = random_floats(cols, 0.5f, 1.5f);
    float *beta = random_floats(cols, -1.0f, 1.0f);
    round_to_dtype(x, n, DTYPE_FP16), round_to_dtype(gamma, cols, DTYPE_FP16), round_to_dtype(beta, cols, DTYPE_FP16);
    float *y_want = malloc((size_t)n * sizeof(float)), *mean_want = malloc((size_t)rows * sizeof(float));
    float *rstd_want = malloc((size_t)rows * sizeof(float));
    ref_layernorm_forward(x, gamma, beta, rows, cols, EPS, y_want, mean_want, rstd_want);

    Problem p = {rows, cols, gpu_upload_fp16(x, n), gpu_upload_fp16(gamma, cols), gpu_upload_fp16(beta, cols),
                 gpu_alloc_poisoned((size_t)n * 2), gpu_alloc_poisoned((size_t)rows * 4),
                 gpu_alloc_poisoned((size_t)rows * 4)};
    char what[160];
    snprintf(what, sizeof what, "ex_layernorm_forward on [%d x %d], x in [%g, %g)", rows, cols, center - spread,
             center + spread);
    run_yours(&p);
    gpu_expect_no_error(what);
    float *y = malloc((size_t)n * sizeof(float)), *mean = malloc((size_t)rows * sizeof(float));
    float *rstd = malloc((size_t)rows * sizeof(float));
    gpu_download_fp16(y, p.y, n);
    gpu_download_f32(mean, p.mean, rows);
    gpu_download_f32(rstd, p.rstd, rows);
    char name[224];
    snprintf(name, sizeof name, "mean (%s)", what);
    expect_close(name, mean, mean_want, rows, 0, 1e-3, hint);
    snprintf(name, sizeof name, "rstd (%s)", what);
    expect_close(name, rstd, rstd_want, rows, 0, 1e-3, hint);
    snprintf(name, sizeof name, "y (%s)", what);
    expect_close(name, y, y_want, rows, cols, 2e-3, hint);

    if (time_it) {
        const double yours = gpu_time_us(run_yours, &p), reference = gpu_time_us(run_solution, &p);
        // The fewest bytes any LayerNorm moves: x read and y written once, the statistics written.
        const double bytes = 2.0 * n * 2 + 2.0 * cols * 2 + 2.0 * rows * 4;
        print_speed_line("your kernel", yours, reference, bytes, gpu_copy_bytes_per_s((size_t)n * 2),
                         "copy bandwidth");
    }
    gpu_free(p.x), gpu_free(p.gamma), gpu_free(p.beta), gpu_free(p.y), gpu_free(p.mean), gpu_free(p.rstd);
    free(x), free(gamma), free(beta), free(y_want), free(mean_want), free(rstd_want), free(y), free(mean), free(rstd);
}

// 333 rows: not a multiple of the rows a block takes; 1000 columns: not a multiple of 32.
static void test_ragged_shape(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    check(333, 1000, 0.0f, 2.0f, 0, NULL);
}

// Rows narrower than a warp (5 columns) and rows far wider than one (4099).
static void test_narrow_and_wide_rows(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    check(1000, 5, 0.0f, 2.0f, 0, NULL);
    check(3, 4099, 0.0f, 2.0f, 0, NULL);
}

// Mean 1000, spread 4: the variance computed as E[x^2] - mean^2 loses it to rounding.
static void test_large_mean(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    check(77, 1536, 1000.0f, 4.0f, 0,
          "With |mean| >> spread, E[x^2] - mean^2 cancels in fp32: compute the variance as the mean of "
          "(x - mean)^2");
}

// The quickstart's LayerNorm, [tokens, hidden] = [8192, 4096]: correct, and how fast.
static void test_quickstart_shape_and_speed(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    check(8192, 4096, 0.0f, 2.0f, 1, NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ragged_shape),
        cmocka_unit_test(test_narrow_and_wide_rows),
        cmocka_unit_test(test_large_mean),
        cmocka_unit_test(test_quickstart_shape_and_speed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
