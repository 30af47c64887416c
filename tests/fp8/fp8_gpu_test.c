// FP8 on the GPU: the C encoder equals CUDA's conversion bit for bit, and the cast kernel
// records amax and scales as it should.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/cuda_check.h"
#include "common/fp8.h"
#include "common/gpu.h"
#include "kernels/fp8/fp8_cast.h"
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

static void test_cast_amax(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    const int64_t n = 100003;
    float *x = random_floats(n, -3.0f, 3.0f);
    round_to_dtype(x, n, DTYPE_BF16);
    x[777] = -9.5f;  // the amax
    void *d_x = dev_upload(x, n, DTYPE_BF16);
    uint8_t *d_out = dev_alloc((size_t)n), *out = malloc((size_t)n);
    float scale = 448.0f / 9.5f, zero = 0.0f, amax;
    float *d_scale = dev_upload_f32(&scale, 1), *d_amax = dev_upload_f32(&zero, 1);
    fp8_cast_amax(d_x, d_out, n, d_scale, d_amax, FP8_E4M3, DTYPE_BF16);
    dev_download_f32(&amax, d_amax, 1);
    CUDA_CHECK(cudaMemcpy(out, d_out, (size_t)n, cudaMemcpyDeviceToHost));
    assert_true(amax == 9.5f);
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) bad += out[i] != fp8_encode(x[i] * scale, FP8_E4M3);
    assert_int_equal(bad, 0);
    dev_free(d_x), dev_free(d_out), dev_free(d_scale), dev_free(d_amax), free(out), free(x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encoder_matches_cuda),
        cmocka_unit_test(test_cast_amax),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
