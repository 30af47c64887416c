// The fused elementwise kernels against the CPU reference ops, fp16 and bf16, fresh data.
#include <stdlib.h>

#include "common/gpu/gpu.h"
#include "common/core/philox.h"
#include "reference/reference.h"
#include "kernels/fused/elementwise.h"
#include "tests/test_util.h"

// Storage rounding of a 16-bit type: fp16 has 11 significant bits, bf16 8; the results
// are rounded once (or twice), so the norm-wise error is a fraction of a unit in the last place.
static double tolerance(DType dt) { return dt == DTYPE_BF16 ? 8e-3 : 1e-3; }

static void test_bias_dropout_add(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    const int rows = 333, cols = 264;
    const int64_t n = (int64_t)rows * cols;
    for (int d = 0; d < 2; d++) {
        DType dt = d ? DTYPE_BF16 : DTYPE_FP16;
        float *x = random_floats(n, -2, 2), *bias = random_floats(cols, -1, 1),
              *res = random_floats(n, -2, 2);
        round_to_dtype(x, n, dt);
        round_to_dtype(bias, cols, dt);
        round_to_dtype(res, n, dt);
        const uint64_t seed = test_seed(), offset = 3;
        // Reference: z = x + bias; y = res + dropout(z).
        float *z = malloc(n * sizeof(float)), *ref = malloc(n * sizeof(float));
        for (int64_t i = 0; i < n; i++) z[i] = x[i] + bias[i % cols];
        ref_dropout_forward(z, n, 0.1f, seed, offset, ref);
        for (int64_t i = 0; i < n; i++) ref[i] += res[i];
        void *dx = dev_upload(x, n, dt), *db = dev_upload(bias, cols, dt), *dr = dev_upload(res, n, dt);
        void *dout = dev_alloc((size_t)n * 2);
        bias_dropout_add_forward(dx, db, dr, dout, rows, cols, 0.1f, seed, offset, dt);
        float *got = malloc(n * sizeof(float));
        dev_download(got, dout, n, dt);
        assert_rel_error(got, ref, n, tolerance(dt));
        dev_free(dx); dev_free(db); dev_free(dr); dev_free(dout);
        free(x); free(bias); free(res); free(z); free(ref); free(got);
    }
}

static void test_add_dropout_backward(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    const int64_t n = 8 * 12345;
    for (int d = 0; d < 2; d++) {
        DType dt = d ? DTYPE_BF16 : DTYPE_FP16;
        float *a = random_floats(n, -1, 1), *b = random_floats(n, -1, 1);
        round_to_dtype(a, n, dt);
        round_to_dtype(b, n, dt);
        const uint64_t seed = test_seed() + 1, offset = 11;
        float *sum = malloc(n * sizeof(float)), *ref = malloc(n * sizeof(float));
        for (int64_t i = 0; i < n; i++) sum[i] = a[i] + b[i];
        ref_dropout_backward(sum, n, 0.25f, seed, offset, ref);
        void *da = dev_upload(a, n, dt), *dbb = dev_upload(b, n, dt);
        void *dsum = dev_alloc((size_t)n * 2), *dz = dev_alloc((size_t)n * 2);
        add_dropout_backward(da, dbb, dsum, dz, n, 0.25f, seed, offset, dt);
        float *got = malloc(n * sizeof(float));
        dev_download(got, dsum, n, dt);
        assert_rel_error(got, sum, n, tolerance(dt));
        dev_download(got, dz, n, dt);
        assert_rel_error(got, ref, n, 2 * tolerance(dt));
        // a += b
        add_inplace(da, dbb, n, dt);
        dev_download(got, da, n, dt);
        assert_rel_error(got, sum, n, tolerance(dt));
        dev_free(da); dev_free(dbb); dev_free(dsum); dev_free(dz);
        free(a); free(b); free(sum); free(ref); free(got);
    }
}

// Sequence parallelism: 4 ranks' slices of the tokens, each with its place in the whole
// (first_index = r * rows/4 * cols), must give the whole tensor's result bit for bit; a
// slice keyed from 0 (the plain entry point) draws another mask.
static void test_dropout_on_slices(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    const int rows = 64, cols = 264, parts = 4, slice_rows = rows / parts;
    const int64_t n = (int64_t)rows * cols, slice_n = n / parts;
    for (int d = 0; d < 2; d++) {
        DType dt = d ? DTYPE_BF16 : DTYPE_FP16;
        float *x = random_floats(n, -2, 2), *bias = random_floats(cols, -1, 1), *res = random_floats(n, -2, 2);
        const uint64_t seed = test_seed() + 2, offset = 5;
        void *dx = dev_upload(x, n, dt), *db = dev_upload(bias, cols, dt), *dr = dev_upload(res, n, dt);
        void *whole = dev_alloc((size_t)n * 2), *sliced = dev_alloc((size_t)n * 2);
        void *gsum_whole = dev_alloc((size_t)n * 2), *gz_whole = dev_alloc((size_t)n * 2);
        void *gsum_sliced = dev_alloc((size_t)n * 2), *gz_sliced = dev_alloc((size_t)n * 2);
        bias_dropout_add_forward(dx, db, dr, whole, rows, cols, 0.3f, seed, offset, dt);
        add_dropout_backward(dx, dr, gsum_whole, gz_whole, n, 0.3f, seed, offset, dt);
        for (int r = 0; r < parts; r++) {
            const int64_t at = r * slice_n;  // elements before rank r's tokens
            bias_dropout_add_forward_at((char *)dx + at * 2, db, (char *)dr + at * 2, (char *)sliced + at * 2,
                                        slice_rows, cols, 0.3f, seed, offset, (uint64_t)at, dt);
            add_dropout_backward_at((char *)dx + at * 2, (char *)dr + at * 2, (char *)gsum_sliced + at * 2,
                                    (char *)gz_sliced + at * 2, slice_n, 0.3f, seed, offset, (uint64_t)at, dt);
        }
        float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
        dev_download(a, whole, n, dt), dev_download(b, sliced, n, dt);
        assert_memory_equal(a, b, (size_t)n * sizeof(float));
        dev_download(a, gz_whole, n, dt), dev_download(b, gz_sliced, n, dt);
        assert_memory_equal(a, b, (size_t)n * sizeof(float));
        dev_download(a, gsum_whole, n, dt), dev_download(b, gsum_sliced, n, dt);
        assert_memory_equal(a, b, (size_t)n * sizeof(float));
        // The last slice keyed from 0: not the whole's mask.
        bias_dropout_add_forward((char *)dx + 3 * slice_n * 2, db, (char *)dr + 3 * slice_n * 2, sliced, slice_rows,
                                 cols, 0.3f, seed, offset, dt);
        dev_download(a, whole, n, dt), dev_download(b, sliced, slice_n, dt);
        int64_t differ = 0;
        for (int64_t i = 0; i < slice_n; i++) differ += a[3 * slice_n + i] != b[i];
        print_message("slice keyed from 0: %lld of %lld elements differ from the whole's\n", (long long)differ,
                      (long long)slice_n);
        assert_true(differ > slice_n / 10);
        void *bufs[] = {dx, db, dr, whole, sliced, gsum_whole, gz_whole, gsum_sliced, gz_sliced};
        dev_free_all(bufs, COUNT_OF(bufs));
        free(x), free(bias), free(res), free(a), free(b);
    }
}

// The strided GELU kernels (elementwise.h) on views of wider rows: forward and backward against
// the reference ops, and the backward that also writes GELU's output again
// (gelu_backward_recomputing_strided, step 07's --recompute-gelu), in place both ways - dx over
// dy, y over x - as step 07 calls it: dx as the plain backward's, y bit for bit
// gelu_forward_strided's output (the same function on the same input; the bits are what
// --recompute-gelu promises).
static void test_gelu_strided(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    const int rows = 77, cols = 200, row = 264;  // each row of the views inside a wider row
    const int64_t n = (int64_t)rows * row;
    for (int d = 0; d < 2; d++) {
        DType dt = d ? DTYPE_BF16 : DTYPE_FP16;
        float *x = random_floats(n, -4, 4), *dy = random_floats(n, -1, 1);
        round_to_dtype(x, n, dt);
        round_to_dtype(dy, n, dt);
        float *ref_y = calloc(n, sizeof(float)), *ref_dx = calloc(n, sizeof(float));
        for (int r = 0; r < rows; r++) {
            ref_gelu_forward(x + (int64_t)r * row, cols, ref_y + (int64_t)r * row);
            ref_gelu_backward(dy + (int64_t)r * row, x + (int64_t)r * row, cols, ref_dx + (int64_t)r * row);
        }
        void *d_x = dev_upload(x, n, dt), *d_dy = dev_upload(dy, n, dt);
        void *d_y = dev_upload(x, n, dt), *d_dx = dev_upload(dy, n, dt);  // outside the views: as uploaded
        gelu_forward_strided(d_x, row, d_y, row, rows, cols, dt);
        gelu_backward_strided(d_dy, row, d_x, row, d_dx, row, rows, cols, dt);
        float *y = malloc(n * sizeof(float)), *dx = malloc(n * sizeof(float));
        float *y2 = malloc(n * sizeof(float)), *dx2 = malloc(n * sizeof(float));
        dev_download(y, d_y, n, dt);
        dev_download(dx, d_dx, n, dt);
        // Compared inside the views only (the columns past cols: left as they were).
        float *got_y = malloc((size_t)rows * cols * sizeof(float)), *want_y = malloc((size_t)rows * cols * sizeof(float));
        float *got_dx = malloc((size_t)rows * cols * sizeof(float)), *want_dx = malloc((size_t)rows * cols * sizeof(float));
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) {
                const int64_t i = (int64_t)r * row + c, k = (int64_t)r * cols + c;
                got_y[k] = y[i], want_y[k] = ref_y[i], got_dx[k] = dx[i], want_dx[k] = ref_dx[i];
            }
        assert_rel_error(got_y, want_y, (int64_t)rows * cols, tolerance(dt));
        assert_rel_error(got_dx, want_dx, (int64_t)rows * cols, tolerance(dt));
        for (int r = 0; r < rows; r++)  // outside the views nothing was written
            for (int c = cols; c < row; c++) {
                const int64_t i = (int64_t)r * row + c;
                assert_true(y[i] == x[i] && dx[i] == dy[i]);
            }
        // In place, as step 07: dx over dy, GELU's output over x.
        gelu_backward_recomputing_strided(d_dy, row, d_x, row, d_dy, row, d_x, row, rows, cols, dt);
        dev_download(dx2, d_dy, n, dt);
        dev_download(y2, d_x, n, dt);
        assert_memory_equal(dx2, dx, (size_t)n * sizeof(float));  // the plain backward's, bit for bit
        assert_memory_equal(y2, y, (size_t)n * sizeof(float));    // forward's output, bit for bit
        dev_free(d_x); dev_free(d_dy); dev_free(d_y); dev_free(d_dx);
        free(x); free(dy); free(ref_y); free(ref_dx); free(y); free(dx); free(y2); free(dx2);
        free(got_y); free(want_y); free(got_dx); free(want_dx);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bias_dropout_add),
        cmocka_unit_test(test_add_dropout_backward),
        cmocka_unit_test(test_dropout_on_slices),
        cmocka_unit_test(test_gelu_strided),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
