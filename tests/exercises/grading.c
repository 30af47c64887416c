#include "tests/exercises/grading.h"

#include <math.h>
#include <stdio.h>

#include "tests/test_util.h"

// fail_msg's text is at most about 1000 characters in cmocka's log: keep messages short.
enum { MSG = 768 };

void expect_int_eq_at(long long got, long long want, const char *file, int line, const char *fmt, ...) {
    if (got == want) return;
    char what[MSG];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    fail_msg("%s: got 0x%llx (%lld), expected 0x%llx (%lld)   [%s:%d]", what, got, got, want, want, file, line);
}

void expect_float_eq_at(double got, double want, const char *file, int line, const char *fmt, ...) {
    if (got == want) return;
    char what[MSG];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    fail_msg("%s: got %.9g, expected %.9g   [%s:%d]", what, got, want, file, line);
}

void expect_true_at(int cond, const char *file, int line, const char *fmt, ...) {
    if (cond) return;
    char what[MSG];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    fail_msg("%s   [%s:%d]", what, file, line);
}

double relative_error(const float *got, const float *want, int64_t n) {
    double diff = 0, norm = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)got[i] - want[i];
        diff += d * d;
        norm += (double)want[i] * want[i];
    }
    return norm > 0 ? sqrt(diff / norm) : sqrt(diff);
}

void expect_close(const char *what, const float *got, const float *want, int64_t rows, int64_t cols,
                  double tol, const char *hint) {
    const int64_t n = cols > 0 ? rows * cols : rows;
    const double err = relative_error(got, want, n);
    print_message("  %-24s rel.err %.2e (tol %.1e)\n", what, err, tol);
    if (err <= tol) return;
    int64_t worst = 0;
    double worst_diff = -1;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(got[i]) && !isnan(want[i])) {  // never written, or a NaN computed
            worst = i;
            break;
        }
        double d = fabs((double)got[i] - want[i]);
        if (d > worst_diff) worst_diff = d, worst = i;
    }
    char where[96];
    if (cols > 0)
        snprintf(where, sizeof where, "[row %lld, col %lld] of %lld x %lld", (long long)(worst / cols),
                 (long long)(worst % cols), (long long)rows, (long long)cols);
    else
        snprintf(where, sizeof where, "[%lld] of %lld", (long long)worst, (long long)rows);
    fail_msg("%s is wrong: relative error %.2e (tolerance %.1e); the worst element, %s: got %.6g, "
             "expected %.6g%s%s%s",
             what, err, tol, where, got[worst], want[worst],
             isnan(got[worst]) ? " (outputs start as NaN: was it written?)" : "", hint ? ". " : "", hint ? hint : "");
}

void fill_nan(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = NAN;
}
