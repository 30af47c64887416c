// FP8 on the GPU: the C encoder equals CUDA's conversion bit for bit, and the cast kernel
// records amax and scales as it should.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/gpu_arch.h"
#include "common/gpu/cuda_check.h"
#include "common/fp8/fp8_format.h"
#include "common/gpu/gpu.h"
#include "reference/reference.h"
#include "modules/fp8_gemm.h"
#include "kernels/fp8/fp8_attention_cast.h"
#include "kernels/fp8/fp8_cast.h"
#include "kernels/layernorm/fast_layernorm.h"
#include "tests/test_util.h"

static void test_encoder_matches_cuda(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    const int64_t n = 1 << 20;
    float *x = random_floats(n, -1.0f, 1.0f);
    // Spread over many binades, past both formats' ranges and into the subnormals.
    for (int64_t i = 0; i < n; i++) x[i] = ldexpf(x[i], (int)(i % 60) - 30);
    x[0] = NAN, x[1] = -INFINITY, x[2] = INFINITY, x[3] = -0.0f, x[4] = 464.0f, x[5] = 61440.0f;
    float *d_x = dev_upload_f32(x, n);
    uint8_t *d_out = dev_alloc((size_t)n), *out = malloc((size_t)n);
    for (int f = 0; f < 2; f++) {
        fp8_encode_device(d_x, d_out, n, (Fp8Format)f);
        CUDA_CHECK(cudaMemcpy(out, d_out, (size_t)n, cudaMemcpyDeviceToHost));
        int64_t mismatches = 0;
        for (int64_t i = 0; i < n; i++) {
            uint8_t c = fp8_encode(x[i], (Fp8Format)f);
            if (c != out[i]) {
                if (mismatches < 5) print_message("  %s: %g -> C 0x%02x, CUDA 0x%02x\n", fp8_format_name((Fp8Format)f), x[i], c, out[i]);
                mismatches++;
            }
        }
        print_message("  %s: %lld mismatches of %lld\n", fp8_format_name((Fp8Format)f), (long long)mismatches, (long long)n);
        assert_int_equal(mismatches, 0);
    }
    dev_free(d_x), dev_free(d_out), free(out), free(x);
}

// The cast alone (no transposed copy), bf16 to E4M3, with a known amax.
static void test_cast_amax(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    const int64_t rows = 248, cols = 400, n = rows * cols;  // not multiples of the 128-wide tiles
    float *x = random_floats(n, -3.0f, 3.0f);
    round_to_dtype(x, n, DTYPE_BF16);
    x[777] = -9.5f;  // the amax
    void *d_x = dev_upload(x, n, DTYPE_BF16);
    uint8_t *d_out = dev_alloc((size_t)n), *out = malloc((size_t)n);
    float scale = 448.0f / 9.5f, zero = 0.0f, amax;
    float *d_scale = dev_upload_f32(&scale, 1), *d_amax = dev_upload_f32(&zero, 1);
    fp8_cast_transpose(d_x, d_out, NULL, rows, cols, d_scale, d_amax, FP8_E4M3, DTYPE_BF16);
    dev_download_f32(&amax, d_amax, 1);
    CUDA_CHECK(cudaMemcpy(out, d_out, (size_t)n, cudaMemcpyDeviceToHost));
    assert_true(amax == 9.5f);
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) bad += out[i] != fp8_encode(x[i] * scale, FP8_E4M3);
    assert_int_equal(bad, 0);
    dev_free(d_x), dev_free(d_out), dev_free(d_scale), dev_free(d_amax), free(out), free(x);
}

// The fused cast + transpose: both outputs bit-exact with the C encoder, and the amax.
static void test_cast_transpose(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    const int64_t rows = 104, cols = 136;  // not multiples of the 128-wide tiles
    float *x = random_floats(rows * cols, -5.0f, 5.0f);
    round_to_dtype(x, rows * cols, DTYPE_FP16);
    x[37] = 6.5f;
    void *d_x = dev_upload(x, rows * cols, DTYPE_FP16);
    uint8_t *d_out = dev_alloc((size_t)(rows * cols)), *d_out_t = dev_alloc((size_t)(rows * cols));
    float scale = 3.0f, zero = 0.0f, amax;
    float *d_scale = dev_upload_f32(&scale, 1), *d_amax = dev_upload_f32(&zero, 1);
    fp8_cast_transpose(d_x, d_out, d_out_t, rows, cols, d_scale, d_amax, FP8_E5M2, DTYPE_FP16);
    uint8_t *out = malloc((size_t)(rows * cols)), *out_t = malloc((size_t)(rows * cols));
    CUDA_CHECK(cudaMemcpy(out, d_out, (size_t)(rows * cols), cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(out_t, d_out_t, (size_t)(rows * cols), cudaMemcpyDeviceToHost));
    dev_download_f32(&amax, d_amax, 1);
    int64_t bad = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            uint8_t want = fp8_encode(x[r * cols + c] * scale, FP8_E5M2);
            bad += out[r * cols + c] != want;
            bad += out_t[c * rows + r] != want;
        }
    assert_int_equal(bad, 0);
    assert_true(amax == 6.5f);
    dev_free(d_x), dev_free(d_out), dev_free(d_out_t), dev_free(d_scale), dev_free(d_amax);
    free(x), free(out), free(out_t);
}

// The cast + transpose that also sums the columns (the bias gradient of a Linear whose output
// gradient is x): codes as above, dbias against the column sums in double, several shapes
// (rows and columns past the 128 x 128 tiles).
static void cast_dbias_case(int64_t rows, int64_t cols, DType dt) {
    float *x = random_floats(rows * cols, -2.0f, 2.0f);
    round_to_dtype(x, rows * cols, dt);
    void *d_x = dev_upload(x, rows * cols, dt);
    uint8_t *d_out = dev_alloc((size_t)(rows * cols)), *d_out_t = dev_alloc((size_t)(rows * cols));
    void *d_dbias = dev_alloc((size_t)cols * 2);
    float *ws = dev_alloc(fp8_cast_transpose_dbias_workspace_bytes(rows, cols));
    float scale = 2.0f, zero = 0.0f;
    float *d_scale = dev_upload_f32(&scale, 1), *d_amax = dev_upload_f32(&zero, 1);
    fp8_cast_transpose_dbias(d_x, d_out, d_out_t, rows, cols, d_scale, d_amax, FP8_E5M2, dt, d_dbias, ws);
    uint8_t *out_t = malloc((size_t)(rows * cols));
    float *dbias = malloc((size_t)cols * sizeof(float)), *want = malloc((size_t)cols * sizeof(float));
    CUDA_CHECK(cudaMemcpy(out_t, d_out_t, (size_t)(rows * cols), cudaMemcpyDeviceToHost));
    dev_download(dbias, d_dbias, cols, dt);
    int64_t bad = 0;
    for (int64_t c = 0; c < cols; c++) {
        double sum = 0.0;
        for (int64_t r = 0; r < rows; r++) {
            sum += x[r * cols + c];
            bad += out_t[c * rows + r] != fp8_encode(x[r * cols + c] * scale, FP8_E5M2);
        }
        want[c] = (float)sum;
    }
    print_message(" %lld x %lld %s\n", (long long)rows, (long long)cols, dtype_name(dt));
    assert_int_equal(bad, 0);
    assert_rel_error(dbias, want, cols, dt == DTYPE_BF16 ? 8e-3 : 1e-3);  // the 16-bit rounding of dbias
    dev_free(d_x), dev_free(d_out), dev_free(d_out_t), dev_free(d_dbias), dev_free(ws), dev_free(d_scale);
    dev_free(d_amax), free(x), free(out_t), free(dbias), free(want);
}

static void test_cast_transpose_dbias(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    cast_dbias_case(104, 136, DTYPE_FP16);
    cast_dbias_case(296, 520, DTYPE_BF16);
    cast_dbias_case(1024, 256, DTYPE_FP16);
}

// GELU applied by the cast: the FP8 codes of GELU(x) * scale, in both layouts, against the
// reference GELU (within FP8's rounding: E4M3 keeps 3 mantissa bits) and the amax of GELU(x).
static void test_gelu_cast_transpose(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    const int64_t rows = 136, cols = 264, n = rows * cols;
    float *x = random_floats(n, -4.0f, 4.0f), *g = malloc((size_t)n * sizeof(float));
    round_to_dtype(x, n, DTYPE_FP16);
    ref_gelu_forward(x, n, g);
    float amax_want = 0.0f;
    for (int64_t i = 0; i < n; i++) amax_want = fabsf(g[i]) > amax_want ? fabsf(g[i]) : amax_want;
    void *d_x = dev_upload(x, n, DTYPE_FP16);
    uint8_t *d_out = dev_alloc((size_t)n), *d_out_t = dev_alloc((size_t)n);
    float scale = 2.0f, zero = 0.0f, amax;
    float *d_scale = dev_upload_f32(&scale, 1), *d_amax = dev_upload_f32(&zero, 1);
    fp8_gelu_cast_transpose(d_x, d_out, d_out_t, rows, cols, d_scale, d_amax, FP8_E4M3, DTYPE_FP16);
    uint8_t *out = malloc((size_t)n), *out_t = malloc((size_t)n);
    CUDA_CHECK(cudaMemcpy(out, d_out, (size_t)n, cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(out_t, d_out_t, (size_t)n, cudaMemcpyDeviceToHost));
    dev_download_f32(&amax, d_amax, 1);
    float *got = malloc((size_t)n * sizeof(float)), *want = malloc((size_t)n * sizeof(float));
    int64_t layouts_differ = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            got[r * cols + c] = fp8_decode(out[r * cols + c], FP8_E4M3);
            want[r * cols + c] = g[r * cols + c] * scale;
            layouts_differ += out[r * cols + c] != out_t[c * rows + r];
        }
    assert_int_equal(layouts_differ, 0);
    assert_rel_error(got, want, n, 3e-2);  // E4M3 rounding: at most 1/16 per element
    assert_true(fabsf(amax - amax_want) <= 1e-3f * amax_want);
    dev_free(d_x), dev_free(d_out), dev_free(d_out_t), dev_free(d_scale), dev_free(d_amax);
    free(x), free(g), free(out), free(out_t), free(got), free(want);
}

// GELU's backward applied by the cast (step 05's FC1): the FP8 codes of dy * GELU'(pre) * scale
// in both layouts, its amax and its column sums (the bias gradient), against the reference's
// GELU backward (within E4M3's rounding for the codes, 16-bit rounding for dbias).
static void test_dgelu_cast_transpose_dbias(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    const int64_t rows = 136, cols = 264, n = rows * cols;
    float *dy = random_floats(n, -1.0f, 1.0f), *pre = random_floats(n, -4.0f, 4.0f);
    round_to_dtype(dy, n, DTYPE_FP16);
    round_to_dtype(pre, n, DTYPE_FP16);
    float *v = malloc((size_t)n * sizeof(float));
    ref_gelu_backward(dy, pre, n, v);
    float amax_want = 0.0f;
    for (int64_t i = 0; i < n; i++) amax_want = fabsf(v[i]) > amax_want ? fabsf(v[i]) : amax_want;
    void *d_dy = dev_upload(dy, n, DTYPE_FP16), *d_pre = dev_upload(pre, n, DTYPE_FP16);
    uint8_t *d_out = dev_alloc((size_t)n), *d_out_t = dev_alloc((size_t)n);
    void *d_dbias = dev_alloc((size_t)cols * 2);
    float *ws = dev_alloc(fp8_cast_transpose_dbias_workspace_bytes(rows, cols));
    float scale = 2.0f, zero = 0.0f, amax;
    float *d_scale = dev_upload_f32(&scale, 1), *d_amax = dev_upload_f32(&zero, 1);
    fp8_dgelu_cast_transpose_dbias(d_dy, d_pre, d_out, d_out_t, rows, cols, d_scale, d_amax, FP8_E4M3, DTYPE_FP16,
                                   d_dbias, ws);
    uint8_t *out = malloc((size_t)n), *out_t = malloc((size_t)n);
    CUDA_CHECK(cudaMemcpy(out, d_out, (size_t)n, cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(out_t, d_out_t, (size_t)n, cudaMemcpyDeviceToHost));
    dev_download_f32(&amax, d_amax, 1);
    float *got = malloc((size_t)n * sizeof(float)), *want = malloc((size_t)n * sizeof(float));
    float *dbias = malloc((size_t)cols * sizeof(float)), *dbias_want = calloc((size_t)cols, sizeof(float));
    dev_download(dbias, d_dbias, cols, DTYPE_FP16);
    int64_t layouts_differ = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            got[r * cols + c] = fp8_decode(out[r * cols + c], FP8_E4M3);
            want[r * cols + c] = v[r * cols + c] * scale;
            dbias_want[c] += v[r * cols + c];
            layouts_differ += out[r * cols + c] != out_t[c * rows + r];
        }
    assert_int_equal(layouts_differ, 0);
    assert_rel_error(got, want, n, 3e-2);  // E4M3 rounding: at most 1/16 per element
    assert_rel_error(dbias, dbias_want, cols, 2e-3);
    assert_true(fabsf(amax - amax_want) <= 1e-3f * amax_want);
    dev_free(d_dy), dev_free(d_pre), dev_free(d_out), dev_free(d_out_t), dev_free(d_dbias), dev_free(ws);
    dev_free(d_scale), dev_free(d_amax);
    free(dy), free(pre), free(v), free(out), free(out_t), free(got), free(want), free(dbias), free(dbias_want);
}

// The byte transpose (for an FP8 input its producer wrote itself): exact, past the tiles' edges.
static void test_fp8_transpose(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    const int64_t rows = 136, cols = 264, n = rows * cols;
    uint8_t *x = malloc((size_t)n), *got = malloc((size_t)n);
    for (int64_t i = 0; i < n; i++) x[i] = (uint8_t)(i * 2654435761u >> 13);
    uint8_t *d_x = dev_alloc((size_t)n), *d_t = dev_alloc((size_t)n);
    CUDA_CHECK(cudaMemcpy(d_x, x, (size_t)n, cudaMemcpyHostToDevice));
    fp8_transpose(d_x, d_t, rows, cols);
    CUDA_CHECK(cudaMemcpy(got, d_t, (size_t)n, cudaMemcpyDeviceToHost));
    int64_t bad = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) bad += got[c * rows + r] != x[r * cols + c];
    assert_int_equal(bad, 0);
    dev_free(d_x), dev_free(d_t), free(x), free(got);
}

// LayerNorm writing FP8 (step 05): the decoded codes against the reference LayerNorm times the
// scale (within E4M3's rounding), and the amax of the normalised output.
static void test_layernorm_fp8(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    const int64_t rows = 96;
    const int cols = 512;
    const int64_t n = rows * cols;
    float *x = random_floats(n, -3.0f, 3.0f), *gamma = random_floats(cols, 0.5f, 1.5f);
    float *beta = random_floats(cols, -0.5f, 0.5f), *y = malloc((size_t)n * sizeof(float));
    float *mean = malloc((size_t)rows * sizeof(float)), *rstd = malloc((size_t)rows * sizeof(float));
    round_to_dtype(x, n, DTYPE_BF16), round_to_dtype(gamma, cols, DTYPE_BF16), round_to_dtype(beta, cols, DTYPE_BF16);
    ref_layernorm_forward(x, gamma, beta, rows, cols, 1e-5f, y, mean, rstd);
    float amax_want = 0.0f;
    for (int64_t i = 0; i < n; i++) amax_want = fabsf(y[i]) > amax_want ? fabsf(y[i]) : amax_want;
    void *d_x = dev_upload(x, n, DTYPE_BF16), *d_g = dev_upload(gamma, cols, DTYPE_BF16);
    void *d_b = dev_upload(beta, cols, DTYPE_BF16);
    uint8_t *d_y8 = dev_alloc((size_t)n), *y8 = malloc((size_t)n);
    float *d_mean = dev_alloc((size_t)rows * 4), *d_rstd = dev_alloc((size_t)rows * 4);
    float scale = 100.0f, zero = 0.0f, amax;
    float *d_scale = dev_upload_f32(&scale, 1), *d_amax = dev_upload_f32(&zero, 1);
    layernorm_fast_forward_fp8(d_x, d_g, d_b, d_y8, d_scale, d_amax, FP8_E4M3, d_mean, d_rstd, rows, cols, 1e-5f,
                               DTYPE_BF16);
    CUDA_CHECK(cudaMemcpy(y8, d_y8, (size_t)n, cudaMemcpyDeviceToHost));
    dev_download_f32(&amax, d_amax, 1);
    float *got = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) got[i] = fp8_decode(y8[i], FP8_E4M3) / scale;
    assert_rel_error(got, y, n, 3e-2);  // E4M3 rounding: at most 1/16 per element
    assert_true(fabsf(amax - amax_want) <= 1e-3f * amax_want);
    dev_free(d_x), dev_free(d_g), dev_free(d_b), dev_free(d_y8), dev_free(d_mean), dev_free(d_rstd);
    dev_free(d_scale), dev_free(d_amax);
    free(x), free(gamma), free(beta), free(y), free(mean), free(rstd), free(y8), free(got);
}

// D = a_scale_inv b_scale_inv A^T B on cuBLASLt against the same product of the decoded FP8
// values in double, for E4M3 x E4M3 (fast accumulation, with bias) and E4M3 x E5M2.
static void fp8_gemm_case(Fp8Format bf, int fast, int with_bias) {
    const int m = 128, n = 96, k = 256;
    const float sa = 8.0f, sb = bf == FP8_E4M3 ? 16.0f : 1024.0f;
    float *x = random_floats((int64_t)m * k, -2, 2), *y = random_floats((int64_t)n * k, -2, 2);
    float *bias = random_floats(m, -1, 1);
    round_to_dtype(bias, m, DTYPE_FP16);
    uint8_t *a = malloc((size_t)m * k), *b = malloc((size_t)n * k);
    for (int i = 0; i < m * k; i++) a[i] = fp8_encode(x[i] * sa, FP8_E4M3);
    for (int i = 0; i < n * k; i++) b[i] = fp8_encode(y[i] * sb, bf);
    float *ref = malloc((size_t)m * n * sizeof(float));
    for (int j = 0; j < n; j++)  // D is column-major [m x n]: element (i, j) at j * m + i
        for (int i = 0; i < m; i++) {
            double acc = 0;
            for (int t = 0; t < k; t++) acc += (double)fp8_decode(a[i * k + t], FP8_E4M3) * fp8_decode(b[j * k + t], bf);
            ref[j * m + i] = (float)(acc / ((double)sa * sb) + (with_bias ? bias[i] : 0.0f));
        }
    uint8_t *da = dev_alloc((size_t)m * k), *db = dev_alloc((size_t)n * k);
    CUDA_CHECK(cudaMemcpy(da, a, (size_t)m * k, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(db, b, (size_t)n * k, cudaMemcpyHostToDevice));
    float inv_a = 1.0f / sa, inv_b = 1.0f / sb;  // separate allocations: scale pointers must be aligned
    float *d_inv = dev_upload_f32(&inv_a, 1), *d_inv_b = dev_upload_f32(&inv_b, 1);
    void *d_bias = dev_upload(bias, m, DTYPE_FP16), *d_out = dev_alloc((size_t)m * n * 2);
    Fp8Gemm g = {.m = m, .n = n, .k = k, .a = da, .a_format = FP8_E4M3, .a_scale_inv = d_inv, .b = db,
                 .b_format = bf, .b_scale_inv = d_inv_b, .d = d_out, .ldd = m, .out_dtype = DTYPE_FP16,
                 .bias = with_bias ? d_bias : NULL, .fast_accum = fast};
    fp8_gemm_run(&g);
    float *got = malloc((size_t)m * n * sizeof(float));
    dev_download(got, d_out, (int64_t)m * n, DTYPE_FP16);
    print_message("  E4M3 x %s, fast accumulation %d, bias %d:", fp8_format_name(bf), fast, with_bias);
    assert_rel_error(got, ref, (int64_t)m * n, 2e-3);  // the fp16 output's rounding
    dev_free(da), dev_free(db), dev_free(d_inv), dev_free(d_inv_b), dev_free(d_bias), dev_free(d_out);
    free(x), free(y), free(bias), free(a), free(b), free(ref), free(got);
}

// Step 05's --fp8-attention cast: Q, K, V read from the fused qkv (a strided view: its rows
// padded here beyond 3 * heads * 128) to E4M3 with three scales, bit-exact with the C encoder:
// q8 and k8 packed [seq, batch, heads, 128], V transposed into vt8 [batch, heads, 128,
// vt_row_stride] with the keys past seq zero; and each tensor's amax in its own history slot.
static void cast_qkv_for_attention_case(DType dtype) {
    const int seq = 100, batch = 3, heads = 2, d = 128;  // seq: not a multiple of the 64-key blocks
    const int64_t tokens = (int64_t)seq * batch, qkv_row = 3LL * heads * d + 8, vt_row = 128;
    const int64_t n_qkv = tokens * qkv_row, n_qk = tokens * heads * d, n_vt = (int64_t)batch * heads * d * vt_row;
    float *qkv = random_floats(n_qkv, -4.0f, 4.0f);
    qkv[5 * qkv_row + 1 * 3 * d + 0 * d + 17] = -7.25f;  // q's amax (token 5, head 1)
    qkv[9 * qkv_row + 0 * 3 * d + 1 * d + 3] = 6.5f;     // k's
    qkv[299 * qkv_row + 1 * 3 * d + 2 * d + 127] = -9.0f;  // v's (the last token)
    round_to_dtype(qkv, n_qkv, dtype);
    // 9 * 60 = 540 > 448: V's largest value saturates (to 448, as the C encoder's).
    const float scale[3] = {2.0f, 0.5f, 60.0f}, expect_amax[3] = {7.25f, 6.5f, 9.0f};
    static const char *const names[3] = {"q", "k", "v"};
    float *meta_host = calloc(FP8_META_HISTORY + 4, sizeof(float)), *meta[3];
    for (int t = 0; t < 3; t++) {
        meta_host[FP8_META_SCALE] = scale[t], meta_host[FP8_META_SCALE_INV] = 1.0f / scale[t];
        meta[t] = dev_upload_f32(meta_host, FP8_META_HISTORY + 4);
    }
    void *d_qkv = dev_upload(qkv, n_qkv, dtype);
    uint8_t *d_q8 = dev_alloc((size_t)n_qk), *d_k8 = dev_alloc((size_t)n_qk), *d_vt8 = dev_alloc((size_t)n_vt);
    CUDA_CHECK(cudaMemset(d_vt8, 0xAB, (size_t)n_vt));  // the padding keys must be overwritten
    const Fp8AttentionCast p = {.seq = seq, .batch = batch, .heads = heads, .head_dim = d, .qkv_row_stride = qkv_row,
                                .vt_row_stride = vt_row, .dtype = dtype};
    fp8_cast_qkv_for_attention(&p, d_qkv, d_q8, d_k8, d_vt8, meta[0], meta[1], meta[2]);
    uint8_t *q8 = malloc((size_t)n_qk), *k8 = malloc((size_t)n_qk), *vt8 = malloc((size_t)n_vt);
    CUDA_CHECK(cudaMemcpy(q8, d_q8, (size_t)n_qk, cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(k8, d_k8, (size_t)n_qk, cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(vt8, d_vt8, (size_t)n_vt, cudaMemcpyDeviceToHost));
    int64_t bad[3] = {0, 0, 0}, bad_padding = 0;
    for (int s = 0; s < seq; s++)
        for (int b = 0; b < batch; b++)
            for (int h = 0; h < heads; h++)
                for (int c = 0; c < d; c++) {
                    const int64_t token = (int64_t)s * batch + b;
                    const float *x = qkv + token * qkv_row + (int64_t)h * 3 * d + c;
                    const int64_t packed = (token * heads + h) * d + c;
                    const int64_t transposed = (((int64_t)b * heads + h) * d + c) * vt_row + s;
                    bad[0] += q8[packed] != fp8_encode(x[0] * scale[0], FP8_E4M3);
                    bad[1] += k8[packed] != fp8_encode(x[d] * scale[1], FP8_E4M3);
                    bad[2] += vt8[transposed] != fp8_encode(x[2 * d] * scale[2], FP8_E4M3);
                }
    for (int64_t row = 0; row < (int64_t)batch * heads * d; row++)
        for (int64_t j = seq; j < vt_row; j++) bad_padding += vt8[row * vt_row + j] != 0;
    print_message("  %s: mismatches q %lld, k %lld, vt %lld; nonzero padding keys %lld\n", dtype_name(dtype),
                  (long long)bad[0], (long long)bad[1], (long long)bad[2], (long long)bad_padding);
    assert_int_equal(bad[0] + bad[1] + bad[2] + bad_padding, 0);
    for (int t = 0; t < 3; t++) {
        float m[FP8_META_HISTORY + 1];
        dev_download_f32(m, meta[t], FP8_META_HISTORY + 1);
        print_message("  %s: amax %g (expected %g), scale %g\n", names[t], m[FP8_META_HISTORY], expect_amax[t],
                      m[FP8_META_SCALE]);
        assert_true(m[FP8_META_HISTORY] == expect_amax[t]);
        assert_true(m[FP8_META_SCALE] == scale[t]);  // read, not written
    }
    for (int t = 0; t < 3; t++) dev_free(meta[t]);
    dev_free(d_qkv), dev_free(d_q8), dev_free(d_k8), dev_free(d_vt8);
    free(q8), free(k8), free(vt8), free(qkv), free(meta_host);
}

static void test_cast_qkv_for_attention(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    cast_qkv_for_attention_case(DTYPE_FP16);
    cast_qkv_for_attention_case(DTYPE_BF16);
}

static void test_fp8_gemm(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    SKIP_BELOW_CC(GPU_ARCH_MIN_FP8, "cuBLASLt's FP8 GEMMs");
    fp8_gemm_case(FP8_E4M3, 1, 1);
    fp8_gemm_case(FP8_E5M2, 0, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encoder_matches_cuda),
        cmocka_unit_test(test_cast_amax),
        cmocka_unit_test(test_cast_transpose), cmocka_unit_test(test_cast_transpose_dbias),
        cmocka_unit_test(test_gelu_cast_transpose), cmocka_unit_test(test_dgelu_cast_transpose_dbias),
        cmocka_unit_test(test_fp8_transpose),
        cmocka_unit_test(test_cast_qkv_for_attention),
        cmocka_unit_test(test_layernorm_fp8),
        cmocka_unit_test(test_fp8_gemm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
