// Step 01's kernels against the CPU reference ops (reference/reference.h), on fresh random
// data, in fp16 and bf16.
//
// Inputs are rounded to the storage type before both sides see them, so what remains is
// the GPU's own rounding: fp32 arithmetic plus one rounding of each output to 16 bits
// (fp16: 2^-11 relative, bf16: 2^-8; norm-wise a fraction of that). The tolerances below
// are a few units of that rounding; a wrong index, mask or formula is off by O(1).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/gpu/gpu.h"
#include "common/core/philox.h"
#include "reference/reference.h"
#include "kernels/naive/bias.h"
#include "kernels/naive/dropout.h"
#include "kernels/naive/gelu.h"
#include "kernels/naive/naive_layernorm.h"
#include "kernels/naive/residual.h"
#include "kernels/naive/softmax.h"
#include "tests/test_util.h"

static const DType DTYPES[2] = {DTYPE_FP16, DTYPE_BF16};

// One rounding of the output to the storage type, with room to spare.
static double tol_out(DType dt) { return dt == DTYPE_BF16 ? 1e-2 : 1.5e-3; }

// Random values already rounded to dt, so host and device start from the same numbers.
static float *random_rounded(int64_t n, float lo, float hi, DType dt) {
    float *x = random_floats(n, lo, hi);
    round_to_dtype(x, n, dt);
    return x;
}

static float *download(const void *dev, int64_t n, DType dt) {
    float *h = malloc((size_t)n * sizeof(float));
    dev_download(h, dev, n, dt);
    return h;
}

static void test_layernorm(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    const int64_t rows = 97;
    const int cols = 1000;  // not a multiple of the block size
    const int64_t n = rows * cols;
    for (int d = 0; d < 2; d++) {
        DType dt = DTYPES[d];
        print_message("  %s\n", dtype_name(dt));
        // A mean far from zero compared to the spread: the two-pass variance must cope.
        float *x = random_rounded(n, 2.0f, 6.0f, dt), *gamma = random_rounded(cols, 0.5f, 1.5f, dt);
        float *beta = random_rounded(cols, -0.5f, 0.5f, dt), *dy = random_rounded(n, -1.0f, 1.0f, dt);
        float *y = malloc(n * sizeof(float)), *mean = malloc(rows * sizeof(float)), *rstd = malloc(rows * sizeof(float));
        float *dx = malloc(n * sizeof(float)), *dgamma = malloc(cols * sizeof(float)), *dbeta = malloc(cols * sizeof(float));
        ref_layernorm_forward(x, gamma, beta, rows, cols, 1e-5f, y, mean, rstd);
        ref_layernorm_backward(dy, x, gamma, mean, rstd, rows, cols, dx, dgamma, dbeta);

        void *d_x = dev_upload(x, n, dt), *d_g = dev_upload(gamma, cols, dt), *d_b = dev_upload(beta, cols, dt);
        void *d_dy = dev_upload(dy, n, dt), *d_y = dev_alloc(n * 2), *d_dx = dev_alloc(n * 2);
        void *d_dg = dev_alloc(cols * 2), *d_db = dev_alloc(cols * 2);
        float *d_mean = dev_alloc(rows * sizeof(float)), *d_rstd = dev_alloc(rows * sizeof(float));
        naive_layernorm_forward(d_x, d_g, d_b, rows, cols, 1e-5f, d_y, d_mean, d_rstd, dt);
        naive_layernorm_backward(d_dy, d_x, d_g, d_mean, d_rstd, rows, cols, d_dx, d_dg, d_db, dt);

        float *got_y = download(d_y, n, dt), *got_dx = download(d_dx, n, dt);
        float *got_dg = download(d_dg, cols, dt), *got_db = download(d_db, cols, dt);
        float *got_mean = malloc(rows * sizeof(float)), *got_rstd = malloc(rows * sizeof(float));
        dev_download_f32(got_mean, d_mean, rows);
        dev_download_f32(got_rstd, d_rstd, rows);
        assert_rel_error(got_y, y, n, tol_out(dt));
        assert_rel_error(got_mean, mean, rows, 1e-5);  // fp32 statistics of the same inputs
        assert_rel_error(got_rstd, rstd, rows, 1e-4);
        assert_rel_error(got_dx, dx, n, 2 * tol_out(dt));
        assert_rel_error(got_dg, dgamma, cols, tol_out(dt));
        assert_rel_error(got_db, dbeta, cols, tol_out(dt));

        void *devs[] = {d_x, d_g, d_b, d_dy, d_y, d_dx, d_dg, d_db, d_mean, d_rstd};
        dev_free_all(devs, COUNT_OF(devs));
        float *hs[] = {x, gamma, beta, dy, y, mean, rstd, dx, dgamma, dbeta, got_y, got_dx, got_dg, got_db, got_mean, got_rstd};
        for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) free(hs[i]);
    }
}

// bias_add and bias_grad are the bias parts of ref_linear_forward/backward: with a zero
// weight, the linear is exactly its bias.
static void test_bias(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    const int64_t rows = 333;
    const int cols = 300;
    const int64_t n = rows * cols;
    for (int d = 0; d < 2; d++) {
        DType dt = DTYPES[d];
        print_message("  %s\n", dtype_name(dt));
        float *y = random_rounded(n, -2, 2, dt), *bias = random_rounded(cols, -1, 1, dt);
        float *dy = random_rounded(n, -1, 1, dt);
        float *ref = malloc(n * sizeof(float)), *ref_db = malloc(cols * sizeof(float));
        for (int64_t i = 0; i < n; i++) ref[i] = y[i] + bias[i % cols];
        // Bias gradient from the reference linear (x and w do not matter for db).
        float *x1 = calloc(rows, sizeof(float)), *w1 = calloc(cols, sizeof(float));
        float *dx1 = malloc(rows * sizeof(float)), *dw1 = malloc(cols * sizeof(float));
        ref_linear_backward(dy, x1, w1, rows, 1, cols, dx1, dw1, ref_db);

        void *d_y = dev_upload(y, n, dt), *d_b = dev_upload(bias, cols, dt), *d_dy = dev_upload(dy, n, dt);
        void *d_db = dev_alloc(cols * 2);
        bias_add(d_y, d_b, rows, cols, dt);
        bias_grad(d_dy, rows, cols, d_db, dt);
        float *got = download(d_y, n, dt), *got_db = download(d_db, cols, dt);
        assert_rel_error(got, ref, n, tol_out(dt));
        assert_rel_error(got_db, ref_db, cols, tol_out(dt));
        dev_free(d_y); dev_free(d_b); dev_free(d_dy); dev_free(d_db);
        float *hs[] = {y, bias, dy, ref, ref_db, x1, w1, dx1, dw1, got, got_db};
        for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) free(hs[i]);
    }
}

static void test_gelu(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    const int64_t n = 100003;
    for (int d = 0; d < 2; d++) {
        DType dt = DTYPES[d];
        print_message("  %s\n", dtype_name(dt));
        float *x = random_rounded(n, -5, 5, dt), *dy = random_rounded(n, -1, 1, dt);
        float *y = malloc(n * sizeof(float)), *dx = malloc(n * sizeof(float));
        ref_gelu_forward(x, n, y);
        ref_gelu_backward(dy, x, n, dx);
        void *d_x = dev_upload(x, n, dt), *d_dy = dev_upload(dy, n, dt), *d_y = dev_alloc(n * 2);
        gelu_forward(d_x, n, d_y, dt);
        gelu_backward(d_dy, d_x, n, d_dy, dt);  // in place, as the step uses it
        float *got = download(d_y, n, dt), *got_dx = download(d_dy, n, dt);
        assert_rel_error(got, y, n, tol_out(dt));
        assert_rel_error(got_dx, dx, n, tol_out(dt));
        dev_free(d_x); dev_free(d_dy); dev_free(d_y);
        free(x); free(dy); free(y); free(dx); free(got); free(got_dx);
    }
}

// The mask must be the reference's exactly (a dropped element is 0, a kept one is not:
// inputs are bounded away from 0), and the kept values scaled by dropout_keep_scale(p).
static void test_dropout(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    const int64_t n = 16 * 6250 + 3;  // a partial group of 16 at the end
    const float probs[3] = {0.1f, 0.5f, 0.0f};
    for (int d = 0; d < 2; d++) {
        for (int k = 0; k < 3; k++) {
            DType dt = DTYPES[d];
            const float p = probs[k];
            const uint64_t seed = test_seed() + 17, offset = 5;
            print_message("  %s p=%.1f\n", dtype_name(dt), p);
            float *x = random_rounded(n, 0.5f, 1.5f, dt);
            float *ref = malloc(n * sizeof(float)), *ref_b = malloc(n * sizeof(float));
            ref_dropout_forward(x, n, p, seed, offset, ref);
            ref_dropout_backward(x, n, p, seed, offset, ref_b);
            void *d_x = dev_upload(x, n, dt), *d_y = dev_alloc(n * 2), *d_b = dev_alloc(n * 2);
            dropout_forward(d_x, n, p, seed, offset, d_y, dt);
            dropout_backward(d_x, n, p, seed, offset, d_b, dt);
            float *got = download(d_y, n, dt), *got_b = download(d_b, n, dt);
            int64_t mask_mismatch = 0, dropped = 0;
            for (int64_t i = 0; i < n; i++) {
                mask_mismatch += (got[i] == 0.0f) != (ref[i] == 0.0f);
                dropped += got[i] == 0.0f;
            }
            print_message("    dropped %.4f, mask mismatches %lld\n", (double)dropped / n, (long long)mask_mismatch);
            assert_int_equal(mask_mismatch, 0);
            assert_rel_error(got, ref, n, tol_out(dt));
            assert_rel_error(got_b, ref_b, n, tol_out(dt));
            dev_free(d_x); dev_free(d_y); dev_free(d_b);
            free(x); free(ref); free(ref_b); free(got); free(got_b);
        }
    }
}

// Attention's probabilities [heads * seq, seq] with attention's numbering (common/core/philox.h),
// at a seq whose last 64-key block is partial: the same mask as the reference's keep test on
// attention_dropout_index, and the kept values scaled.
static void test_attention_dropout(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    const int seq = 100, heads = 3;
    const int64_t rows = (int64_t)heads * seq, n = rows * seq;
    const float p = 0.1f;
    const uint64_t seed = test_seed() + 23, offset = 9;
    for (int d = 0; d < 2; d++) {
        DType dt = DTYPES[d];
        float *x = random_rounded(n, 0.5f, 1.5f, dt), *ref = malloc(n * sizeof(float));
        for (int64_t r = 0; r < rows; r++)
            for (int j = 0; j < seq; j++) {
                const uint64_t index = attention_dropout_index((uint64_t)(r / seq), (int)(r % seq), j, seq);
                ref[r * seq + j] = dropout_keep(seed, offset, index, p) ? x[r * seq + j] * dropout_keep_scale(p) : 0.0f;
            }
        void *d_x = dev_upload(x, n, dt), *d_y = dev_alloc(n * 2);
        attention_dropout_forward(d_x, rows, seq, p, seed, offset, d_y, dt);
        float *got = download(d_y, n, dt);
        int64_t mask_mismatch = 0;
        for (int64_t i = 0; i < n; i++) mask_mismatch += (got[i] == 0.0f) != (ref[i] == 0.0f);
        print_message("  %s: mask mismatches %lld of %lld\n", dtype_name(dt), (long long)mask_mismatch, (long long)n);
        assert_int_equal(mask_mismatch, 0);
        assert_rel_error(got, ref, n, tol_out(dt));
        dev_free(d_x), dev_free(d_y);
        free(x), free(ref), free(got);
    }
}

static void test_residual_add(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    const int64_t n = 54321;
    for (int d = 0; d < 2; d++) {
        DType dt = DTYPES[d];
        float *a = random_rounded(n, -1, 1, dt), *b = random_rounded(n, -1, 1, dt);
        float *ref = malloc(n * sizeof(float));
        for (int64_t i = 0; i < n; i++) ref[i] = a[i] + b[i];
        void *d_a = dev_upload(a, n, dt), *d_b = dev_upload(b, n, dt);
        residual_add(d_a, d_b, n, d_a, dt);  // in place
        float *got = download(d_a, n, dt);
        assert_rel_error(got, ref, n, tol_out(dt));
        dev_free(d_a); dev_free(d_b);
        free(a); free(b); free(ref); free(got);
    }
}

// The softmax of reference/reference.c's attention, written out here for a bare score matrix
// (the reference has it only inside ref_attention_forward): double precision.
static void cpu_softmax(const float *s, int64_t rows, int seq, float scale, int causal, float *p) {
    for (int64_t r = 0; r < rows; r++) {
        int last = causal ? (int)(r % seq) : seq - 1;
        double m = -INFINITY, sum = 0.0;
        for (int j = 0; j <= last; j++) m = fmax(m, (double)s[r * seq + j] * scale);
        for (int j = 0; j <= last; j++) sum += exp((double)s[r * seq + j] * scale - m);
        for (int j = 0; j < seq; j++)
            p[r * seq + j] = j <= last ? (float)(exp((double)s[r * seq + j] * scale - m) / sum) : 0.0f;
    }
}

static void cpu_softmax_backward(const float *dp, const float *p, int64_t rows, int seq, float *ds) {
    for (int64_t r = 0; r < rows; r++) {
        double dot = 0.0;
        for (int j = 0; j < seq; j++) dot += (double)dp[r * seq + j] * p[r * seq + j];
        for (int j = 0; j < seq; j++) ds[r * seq + j] = (float)(p[r * seq + j] * (dp[r * seq + j] - dot));
    }
}

static void test_softmax(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    const int seq = 300;  // > the block size, not a multiple of it
    const int64_t rows = 3 * seq;  // three (batch, head) entries: the causal row index wraps
    const int64_t n = rows * seq;
    for (int d = 0; d < 2; d++) {
        for (int causal = 0; causal < 2; causal++) {
            DType dt = DTYPES[d];
            print_message("  %s%s\n", dtype_name(dt), causal ? " causal" : "");
            float *s = random_rounded(n, -8, 8, dt), *dp = random_rounded(n, -1, 1, dt);
            float *p = malloc(n * sizeof(float)), *ds = malloc(n * sizeof(float));
            cpu_softmax(s, rows, seq, 0.7f, causal, p);
            void *d_s = dev_upload(s, n, dt), *d_p = dev_alloc(n * 2);
            softmax_forward(d_s, rows, seq, 0.7f, causal, d_p, dt);
            float *got = download(d_p, n, dt);
            assert_rel_error(got, p, n, tol_out(dt));
            // Backward from the GPU's (rounded) probabilities, the ones it would use.
            cpu_softmax_backward(dp, got, rows, seq, ds);
            void *d_dp = dev_upload(dp, n, dt);
            softmax_backward(d_dp, d_p, rows, seq, d_dp, dt);  // in place
            float *got_ds = download(d_dp, n, dt);
            assert_rel_error(got_ds, ds, n, 2 * tol_out(dt));
            dev_free(d_s); dev_free(d_p); dev_free(d_dp);
            free(s); free(dp); free(p); free(ds); free(got); free(got_ds);
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layernorm), cmocka_unit_test(test_bias),
        cmocka_unit_test(test_gelu),      cmocka_unit_test(test_dropout), cmocka_unit_test(test_attention_dropout),
        cmocka_unit_test(test_residual_add), cmocka_unit_test(test_softmax),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
