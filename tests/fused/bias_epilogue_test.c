// The bias epilogues' kernels (kernels/fused/bias_epilogue.h) against the CPU reference, fp16
// and bf16, fresh random data, ragged shapes: rows and cols not multiples of any block, cols
// not a multiple of 8 (one value per access), a misaligned row start (also one per access),
// and the bias gradient's row chunks (many rows) and its determinism.
#include <stdlib.h>
#include <string.h>

#include "common/gpu/gpu.h"
#include "kernels/fused/bias_epilogue.h"
#include "reference/reference.h"
#include "tests/test_util.h"

// Norm-wise relative error: one rounding of the result to the dtype (fp16 2^-11, bf16 2^-8),
// fp32 sums.
static double tolerance(DType dt) { return dt == DTYPE_BF16 ? 8e-3 : 1e-3; }

static float *rounded(int64_t n, float lo, float hi, DType dt) {
    float *x = random_floats(n, lo, hi);
    round_to_dtype(x, n, dt);
    return x;
}

static float *download(const void *dev, int64_t n, DType dt) {
    float *x = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    dev_download(x, dev, n, dt);
    return x;
}

// dy [rows, cols] starting `shift` elements into its buffer (shift 1: not 16-byte aligned).
static void bias_grad_case(DType dt, int64_t rows, int cols, int shift) {
    const int64_t n = rows * cols;
    const int64_t len = n + shift + 8;  // never empty (rows 0)
    float *dy = rounded(len, -1.0f, 1.5f, dt);  // a non-zero mean: sums that grow with rows
    double *sum = calloc((size_t)cols, sizeof(double));
    for (int64_t r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) sum[c] += dy[shift + r * cols + c];
    float *ref = malloc((size_t)cols * sizeof(float));
    for (int c = 0; c < cols; c++) ref[c] = (float)sum[c];
    void *d_dy = dev_upload(dy, len, dt), *d_db = dev_alloc((size_t)cols * 2);
    void *ws = dev_alloc(bias_grad_workspace_bytes(cols));
    const void *at = (const char *)d_dy + (size_t)shift * 2;
    bias_grad_columns(at, rows, cols, d_db, ws, dt);
    float *got = download(d_db, cols, dt);
    print_message("  bias_grad_columns %s rows %lld cols %d shift %d:", dtype_name(dt), (long long)rows, cols, shift);
    if (rows == 0) {
        for (int c = 0; c < cols; c++) assert_true(got[c] == 0.0f);
        print_message(" all zero\n");
    } else {
        assert_rel_error(got, ref, cols, tolerance(dt));
    }
    // Same input, same bits: the order of the additions depends on the shape only.
    bias_grad_columns(at, rows, cols, d_db, ws, dt);
    float *again = download(d_db, cols, dt);
    assert_memory_equal(got, again, (size_t)cols * sizeof(float));
    void *bufs[] = {d_dy, d_db, ws};
    dev_free_all(bufs, COUNT_OF(bufs));
    free(dy), free(sum), free(ref), free(got), free(again);
}

static void test_bias_grad_columns(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    for (int d = 0; d < 2; d++) {
        const DType dt = d ? DTYPE_BF16 : DTYPE_FP16;
        bias_grad_case(dt, 1, 1, 0);
        bias_grad_case(dt, 333, 264, 0);    // 16-byte path, a partial column block
        bias_grad_case(dt, 333, 264, 1);    // misaligned: one value per access
        bias_grad_case(dt, 517, 1037, 0);   // cols not a multiple of 8
        bias_grad_case(dt, 4099, 4096, 0);  // many row chunks, the last one short
        bias_grad_case(dt, 70, 16392, 0);   // one chunk, wide
        bias_grad_case(dt, 0, 40, 0);       // no rows: zeros
    }
}

// gelu: 0 for bias_add_rows (y += bias), 1 for bias_gelu_forward (pre += bias, out = GELU).
static void bias_act_case(DType dt, int64_t rows, int cols, int gelu) {
    const int64_t n = rows * cols;
    float *y = rounded(n, -3.0f, 3.0f, dt), *b = rounded(cols, -1.0f, 1.0f, dt);
    float *sum = malloc((size_t)n * sizeof(float)), *act = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) sum[i] = y[i] + b[i % cols];
    ref_gelu_forward(sum, n, act);  // GELU of the unrounded sum, as the kernel (and the epilogue)
    void *d_y = dev_upload(y, n, dt), *d_b = dev_upload(b, cols, dt), *d_out = dev_alloc((size_t)n * 2);
    if (gelu) bias_gelu_forward(d_y, d_b, d_out, rows, cols, dt);
    else bias_add_rows(d_y, d_b, rows, cols, dt);
    print_message("  %s %s rows %lld cols %d\n", gelu ? "bias_gelu_forward" : "bias_add_rows", dtype_name(dt),
                  (long long)rows, cols);
    float *got = download(d_y, n, dt);
    assert_rel_error(got, sum, n, tolerance(dt));
    free(got);
    if (gelu) {
        got = download(d_out, n, dt);
        assert_rel_error(got, act, n, tolerance(dt));
        free(got);
    }
    void *bufs[] = {d_y, d_b, d_out};
    dev_free_all(bufs, COUNT_OF(bufs));
    free(y), free(b), free(sum), free(act);
}

static void test_bias_add_and_gelu(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    for (int d = 0; d < 2; d++) {
        const DType dt = d ? DTYPE_BF16 : DTYPE_FP16;
        for (int gelu = 0; gelu < 2; gelu++) {
            bias_act_case(dt, 333, 264, gelu);    // 16-byte path, a partial block of columns
            bias_act_case(dt, 129, 1037, gelu);   // one value per access
            bias_act_case(dt, 3001, 2056, gelu);  // more rows than the grid has
            bias_act_case(dt, 1, 8, gelu);
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bias_grad_columns),
        cmocka_unit_test(test_bias_add_and_gelu),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
