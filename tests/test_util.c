#include "tests/test_util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "common/core/errors.h"
#include "common/core/tolerance.h"
#include "common/gpu/gpu.h"

int test_have_gpu(void) {
    static int have = -1;
    if (have < 0) {
        have = gpu_count() > 0;
        if (have) gpu_require();
    }
    return have;
}

const char *test_gpu_reason(void) { return gpu_unavailable_reason(); }

const char *test_gpu_refusal(const char *what, int min_cc) { return gpu_refusal(what, min_cc); }

void assert_rel_error_at(const float *a, const float *ref, int64_t n, double tol,
                         const char *what, const char *file, int line) {
    double err = rel_error(a, ref, n);
    print_message("  %-28s rel.err %.3e (tol %.1e)\n", what, err, tol);
    if (!(err <= tol)) {
        fail_msg("%s:%d: %s: relative error %.3e exceeds tolerance %.1e", file, line, what, err, tol);
    }
}

static uint64_t seed_value;
static int seed_read;  // (TEST_SEED=0 is a seed too)
static uint64_t stream_counter;

uint64_t test_seed(void) {
    if (!seed_read) {
        seed_read = 1;
        const char *env = getenv("TEST_SEED");
        if (env && *env) {  // a whole number, as a test printed it; anything else replays nothing
            char *end;
            errno = 0;
            seed_value = strtoull(env, &end, 10);
            if (*end || errno || env[0] == '-') {
                fprintf(stderr, "TEST_SEED=%s: expected the whole number a test printed (\"random seed N\")\n", env);
                exit(2);
            }
        } else {
            // The clock to the microsecond and the process id: two runs started in the same second
            // (tools/grade.sh twice in a row, two test programs side by side) draw different data.
            // Below 2^53, so that the seed survives a trip through a double (JSON) intact.
            struct timespec now;
            clock_gettime(CLOCK_REALTIME, &now);
            seed_value = (((uint64_t)now.tv_sec << 20) ^ ((uint64_t)now.tv_nsec >> 10) ^ ((uint64_t)getpid() << 8)) &
                         ((1ull << 53) - 1);
        }
        printf("random seed %llu (set TEST_SEED to replay)\n", (unsigned long long)seed_value);
    }
    return seed_value;
}

float *random_floats(int64_t n, float lo, float hi) {
    float *x = xmalloc((size_t)n * sizeof(float));
    fill_uniform(x, n, lo, hi, test_seed(), 1000 + stream_counter++);
    return x;
}
