// The split LayerNorm kernels (steps/07_tensor_parallel/split_layernorm.h) on one GPU: the
// tp ranks' slices are separate device buffers, and the all-reduce of the 2 floats per row
// is done on the host. Gathered, y, dz, dgamma and dbeta must equal the unsharded
// reference LayerNorm (reference/reference.h) for tp = 1, 2, 4.
//
// Tolerance: values are stored in fp16/bf16 (one rounding of y and dz: ~5e-4 / 4e-3
// relative), statistics in fp32; 2e-3 (fp16) and 1.5e-2 (bf16) as for the other LayerNorm
// kernels.
#include <stdlib.h>
#include <string.h>

#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu.h"
#include "reference/reference.h"
#include "steps/07_tensor_parallel/split_layernorm.h"
#include "tests/test_util.h"

static void all_reduce_host(float **dev, int tp, int64_t n) {
    float *sum = calloc((size_t)n, sizeof(float)), *part = malloc((size_t)n * sizeof(float));
    for (int r = 0; r < tp; r++) {
        dev_download_f32(part, dev[r], n);
        for (int64_t i = 0; i < n; i++) sum[i] += part[i];
    }
    for (int r = 0; r < tp; r++) CUDA_CHECK(cudaMemcpy(dev[r], sum, (size_t)n * sizeof(float), cudaMemcpyHostToDevice));
    free(sum), free(part);
}

// Columns [c0, c0 + nc) of a [rows, cols] host matrix.
static float *slice_cols(const float *m, int64_t rows, int cols, int c0, int nc) {
    float *s = malloc((size_t)(rows * nc) * sizeof(float));
    for (int64_t r = 0; r < rows; r++) memcpy(s + r * nc, m + r * cols + c0, (size_t)nc * sizeof(float));
    return s;
}

static void check_split(DType dtype, int tp, double tol) {
    const int64_t rows = 96;
    const int F = 1024, fl = F / tp;
    const float eps = 1e-5f;
    float *z = random_floats(rows * F, -1.0f, 2.0f), *dy = random_floats(rows * F, -1.0f, 1.0f);
    float *gamma = random_floats(F, 0.8f, 1.2f), *beta = random_floats(F, -0.2f, 0.2f);
    round_to_dtype(z, rows * F, dtype), round_to_dtype(dy, rows * F, dtype);
    round_to_dtype(gamma, F, dtype), round_to_dtype(beta, F, dtype);
    float *y_ref = malloc((size_t)(rows * F) * sizeof(float)), *dz_ref = malloc((size_t)(rows * F) * sizeof(float));
    float mean[96], rstd[96], *dg_ref = malloc((size_t)F * sizeof(float)), *db_ref = malloc((size_t)F * sizeof(float));
    ref_layernorm_forward(z, gamma, beta, rows, F, eps, y_ref, mean, rstd);
    ref_layernorm_backward(dy, z, gamma, mean, rstd, rows, F, dz_ref, dg_ref, db_ref);

    void *d_z[4], *d_dy[4], *d_g[4], *d_b[4], *d_y[4], *d_dz[4], *d_dg[4], *d_db[4];
    float *d_stats[4], *d_mean[4], *d_rstd[4];
    for (int r = 0; r < tp; r++) {
        float *zs = slice_cols(z, rows, F, r * fl, fl), *dys = slice_cols(dy, rows, F, r * fl, fl);
        d_z[r] = dev_upload(zs, rows * fl, dtype), d_dy[r] = dev_upload(dys, rows * fl, dtype);
        d_g[r] = dev_upload(gamma + r * fl, fl, dtype), d_b[r] = dev_upload(beta + r * fl, fl, dtype);
        d_y[r] = dev_alloc((size_t)(rows * fl) * 2), d_dz[r] = dev_alloc((size_t)(rows * fl) * 2);
        d_dg[r] = dev_alloc((size_t)fl * 2), d_db[r] = dev_alloc((size_t)fl * 2);
        d_stats[r] = dev_alloc((size_t)rows * 2 * sizeof(float));
        d_mean[r] = dev_alloc((size_t)rows * sizeof(float)), d_rstd[r] = dev_alloc((size_t)rows * sizeof(float));
        free(zs), free(dys);
    }
    for (int r = 0; r < tp; r++) split_ln_partial_stats(d_z[r], rows, fl, d_stats[r], dtype);
    all_reduce_host(d_stats, tp, 2 * rows);
    for (int r = 0; r < tp; r++)
        split_ln_forward_apply(d_z[r], d_g[r], d_b[r], d_stats[r], rows, fl, F, eps, d_y[r], d_mean[r], d_rstd[r], dtype);
    for (int r = 0; r < tp; r++)
        split_ln_partial_grad_sums(d_dy[r], d_z[r], d_g[r], d_mean[r], d_rstd[r], rows, fl, d_stats[r], dtype);
    all_reduce_host(d_stats, tp, 2 * rows);
    for (int r = 0; r < tp; r++) {
        split_ln_backward_apply(d_dy[r], d_z[r], d_g[r], d_mean[r], d_rstd[r], d_stats[r], rows, fl, F, d_dz[r], dtype);
        split_ln_param_grads(d_dy[r], d_z[r], d_mean[r], d_rstd[r], rows, fl, d_dg[r], d_db[r], dtype);
    }
    // Gather the slices back into full rows.
    float *y = malloc((size_t)(rows * F) * sizeof(float)), *dz = malloc((size_t)(rows * F) * sizeof(float));
    float *dg = malloc((size_t)F * sizeof(float)), *db = malloc((size_t)F * sizeof(float));
    float *part = malloc((size_t)(rows * fl) * sizeof(float));
    for (int r = 0; r < tp; r++) {
        dev_download(part, d_y[r], rows * fl, dtype);
        for (int64_t i = 0; i < rows; i++) memcpy(y + i * F + r * fl, part + i * fl, (size_t)fl * sizeof(float));
        dev_download(part, d_dz[r], rows * fl, dtype);
        for (int64_t i = 0; i < rows; i++) memcpy(dz + i * F + r * fl, part + i * fl, (size_t)fl * sizeof(float));
        dev_download(dg + r * fl, d_dg[r], fl, dtype);
        dev_download(db + r * fl, d_db[r], fl, dtype);
    }
    print_message("%s tp=%d\n", dtype_name(dtype), tp);
    assert_rel_error(y, y_ref, rows * F, tol);
    assert_rel_error(dz, dz_ref, rows * F, tol);
    assert_rel_error(dg, dg_ref, F, tol);
    assert_rel_error(db, db_ref, F, tol);
    for (int r = 0; r < tp; r++) {
        void *all[] = {d_z[r], d_dy[r], d_g[r], d_b[r], d_y[r], d_dz[r], d_dg[r], d_db[r], d_stats[r], d_mean[r], d_rstd[r]};
        dev_free_all(all, COUNT_OF(all));
    }
    free(z), free(dy), free(gamma), free(beta), free(y_ref), free(dz_ref), free(dg_ref), free(db_ref);
    free(y), free(dz), free(dg), free(db), free(part);
}

static void test_split_layernorm_fp16(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    for (int tp = 1; tp <= 4; tp *= 2) check_split(DTYPE_FP16, tp, 2e-3);
}

static void test_split_layernorm_bf16(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    for (int tp = 1; tp <= 4; tp *= 2) check_split(DTYPE_BF16, tp, 1.5e-2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_layernorm_fp16),
        cmocka_unit_test(test_split_layernorm_bf16),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
