// Helpers for the cmocka tests.
//
// cmocka needs <stdarg.h>, <stddef.h>, <stdint.h> and <setjmp.h> before <cmocka.h>; this
// header includes them in that order, so a test includes just "tests/test_util.h".
#ifndef TESTS_TEST_UTIL_H
#define TESTS_TEST_UTIL_H

// clang-format off
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
// clang-format on

#include "common/core/layer.h"

// GPU test cases start with this: without a usable GPU the case is reported as skipped,
// with the reason, instead of failing.
#define SKIP_WITHOUT_GPU()                                                                   \
    do {                                                                                     \
        if (!test_have_gpu()) {                                                              \
            print_message("[ SKIP     ] %s: needs a CUDA GPU: %s\n", __func__,                \
                          test_gpu_reason());                                                \
            skip();                                                                          \
        }                                                                                    \
    } while (0)

// GPU test cases of what only newer GPUs have (FP8: min_cc GPU_ARCH_MIN_FP8, from
// common/core/gpu_arch.h) start with this after SKIP_WITHOUT_GPU: on an older GPU, or one that
// GPU_SIMULATE_CC makes act as one, the case is reported as skipped, with the GPU's refusal.
#define SKIP_BELOW_CC(min_cc, what)                                                          \
    do {                                                                                     \
        const char *refusal_ = test_gpu_refusal(what, min_cc);                              \
        if (refusal_) {                                                                      \
            print_message("[ SKIP     ] %s: %s\n", __func__, refusal_);                      \
            skip();                                                                          \
        }                                                                                    \
    } while (0)

int test_have_gpu(void);           // selects device 0 when there is one
// NULL when the GPU (its effective compute capability) has min_cc, else why not.
const char *test_gpu_refusal(const char *what, int min_cc);
const char *test_gpu_reason(void);

// Asserts that the relative error ||a - ref|| / ||ref|| is at most tol, printing the
// error either way so a log shows the margin.
#define assert_rel_error(a, ref, n, tol) assert_rel_error_at(a, ref, n, tol, #a, __FILE__, __LINE__)
void assert_rel_error_at(const float *a, const float *ref, int64_t n, double tol,
                         const char *what, const char *file, int line);

// Fresh random data for each test: uniform in [lo, hi) from a seed that changes per call.
float *random_floats(int64_t n, float lo, float hi);
// The seed used for random_floats (printed by tests so a failure can be replayed).
uint64_t test_seed(void);

#endif  // TESTS_TEST_UTIL_H
