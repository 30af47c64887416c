// GPU basics: the device's Philox dropout masks equal the host's bit for bit, and fp16/bf16
// uploads and downloads round-trip.
#include <stdlib.h>

#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu.h"
#include "common/core/philox.h"
#include "kernels/rng/dropout_mask.h"
#include "tests/test_util.h"

static void test_dropout_mask_matches_host(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    const int64_t n = 1000003;  // not a multiple of 4: the last group is partial
    const uint64_t seed = test_seed(), offset = 5, first = 12345;  // first not a multiple of 4
    uint8_t *d_mask = dev_alloc((size_t)n);
    dropout_mask_fill(d_mask, n, first, 0.1f, seed, offset);
    uint8_t *mask = malloc((size_t)n);
    CUDA_CHECK(cudaMemcpy(mask, d_mask, (size_t)n, cudaMemcpyDeviceToHost));
    int64_t mismatches = 0, kept = 0;
    for (int64_t i = 0; i < n; i++) {
        mismatches += mask[i] != (uint8_t)dropout_keep(seed, offset, first + (uint64_t)i, 0.1f);
        kept += mask[i];
    }
    print_message("  kept %.4f of %lld, %lld mismatches\n", (double)kept / n, (long long)n,
                  (long long)mismatches);
    assert_int_equal(mismatches, 0);
    free(mask);
    dev_free(d_mask);
}

static void test_upload_download_round_trip(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    const int64_t n = 4097;
    for (int d = 0; d < 2; d++) {
        DType dt = d ? DTYPE_BF16 : DTYPE_FP16;
        float *x = random_floats(n, -3.0f, 3.0f);
        round_to_dtype(x, n, dt);
        float *y = malloc(n * sizeof(float));
        void *dev = dev_upload(x, n, dt);
        dev_download(y, dev, n, dt);
        for (int64_t i = 0; i < n; i++) assert_true(x[i] == y[i]);
        size_t in_use = dev_bytes_in_use();
        dev_free(dev);
        assert_int_equal(dev_bytes_in_use(), in_use - (size_t)n * 2);
        free(x);
        free(y);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dropout_mask_matches_host),
        cmocka_unit_test(test_upload_download_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
