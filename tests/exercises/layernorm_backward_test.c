// Graded: exercise "layernorm_backward" (exercises/layernorm_backward.c).
//
// The gradient is checked against finite differences of the forward pass (which is not part
// of the exercise), so these tests need no trusted backward. The outputs handed to the code under
// test start as NaN: it must overwrite them, not add to them. Each test case is one point.
#include <math.h>
#include <stdlib.h>

#include "reference/reference.h"
#include "tests/exercises/grading.h"
#include "tests/test_util.h"

enum { ROWS = 4, COLS = 16 };

typedef struct {
    float x[ROWS * COLS], gamma[COLS], beta[COLS], w[ROWS * COLS];
} Problem;

static void make_problem(Problem *p, int unit_gamma) {
    float *x = random_floats(ROWS * COLS, -2, 2), *g = random_floats(COLS, 0.5f, 1.5f);
    float *b = random_floats(COLS, -1, 1), *w = random_floats(ROWS * COLS, -1, 1);
    for (int i = 0; i < ROWS * COLS; i++) p->x[i] = x[i], p->w[i] = w[i];
    for (int c = 0; c < COLS; c++) p->gamma[c] = unit_gamma ? 1.0f : g[c], p->beta[c] = b[c];
    free(x), free(g), free(b), free(w);
}

// L = sum(y * w): its gradient with respect to y is w.
static double loss(Problem *p) {
    float y[ROWS * COLS], mean[ROWS], rstd[ROWS];
    ref_layernorm_forward(p->x, p->gamma, p->beta, ROWS, COLS, 1e-5f, y, mean, rstd);
    double l = 0;
    for (int i = 0; i < ROWS * COLS; i++) l += (double)y[i] * p->w[i];
    return l;
}

static void backward(Problem *p, float *dx, float *dgamma, float *dbeta) {
    float y[ROWS * COLS], mean[ROWS], rstd[ROWS];
    ref_layernorm_forward(p->x, p->gamma, p->beta, ROWS, COLS, 1e-5f, y, mean, rstd);
    fill_nan(dx, ROWS * COLS), fill_nan(dgamma, COLS), fill_nan(dbeta, COLS);
    ref_layernorm_backward(p->w, p->x, p->gamma, mean, rstd, ROWS, COLS, dx, dgamma, dbeta);
}

static double fd(Problem *p, float *v) {
    const double h = 1e-2;
    float saved = *v;
    *v = (float)(saved + h);
    double up = loss(p);
    *v = (float)(saved - h);
    double down = loss(p);
    *v = saved;
    return (up - down) / (2 * h);
}

#define RANDOM_PROBLEM "random x, gamma, beta, dy"

// ||a - b|| / ||b|| over n entries, must be below 1e-3 (the finite differences' own error
// is near 1e-5 here; a missing term is off by O(1)).
// input: how the problem was made, for the message; hint (or NULL) is added to it.
static void expect_fd_close(const char *what, const char *input, const double *got, const double *want, int n,
                            const char *hint) {
    double diff = 0, norm = 0;
    for (int i = 0; i < n; i++) diff += (got[i] - want[i]) * (got[i] - want[i]), norm += want[i] * want[i];
    double err = sqrt(diff / fmax(norm, 1e-30));
    print_message("  %-8s rel.err %.2e\n", what, err);
    if (err < 1e-3) return;
    int worst = 0;  // a NaN (never written: outputs start as NaN), else the largest difference
    for (int i = 0; i < n; i++) {
        if (isnan(got[i])) {
            worst = i;
            break;
        }
        if (fabs(got[i] - want[i]) > fabs(got[worst] - want[worst])) worst = i;
    }
    fail_msg("%s is wrong (%d x %d input, %s): relative error %.2e against finite "
             "differences; worst element %d: got %.6g, expected %.6g%s%s%s",
             what, ROWS, COLS, input, err, worst, got[worst], want[worst],
             isnan(got[worst]) ? " (the outputs start as NaN: overwrite them, do not add to them)" : "",
             hint ? ". " : "", hint ? hint : "");
}

static void test_dbeta(void **state) {
    (void)state;
    Problem p;
    make_problem(&p, 0);
    float dx[ROWS * COLS], dg[COLS], db[COLS];
    backward(&p, dx, dg, db);
    double got[COLS], want[COLS];
    for (int c = 0; c < COLS; c++) got[c] = db[c], want[c] = fd(&p, &p.beta[c]);
    expect_fd_close("dbeta", RANDOM_PROBLEM, got, want, COLS, NULL);
}

static void test_dgamma(void **state) {
    (void)state;
    Problem p;
    make_problem(&p, 0);
    float dx[ROWS * COLS], dg[COLS], db[COLS];
    backward(&p, dx, dg, db);
    double got[COLS], want[COLS];
    for (int c = 0; c < COLS; c++) got[c] = dg[c], want[c] = fd(&p, &p.gamma[c]);
    expect_fd_close("dgamma", RANDOM_PROBLEM, got, want, COLS, NULL);
}

static void dx_case(int unit_gamma) {
    Problem p;
    make_problem(&p, unit_gamma);
    float dx[ROWS * COLS], dg[COLS], db[COLS];
    backward(&p, dx, dg, db);
    double got[ROWS * COLS], want[ROWS * COLS];
    for (int i = 0; i < ROWS * COLS; i++) got[i] = dx[i], want[i] = fd(&p, &p.x[i]);
    expect_fd_close("dx", unit_gamma ? "random x, beta, dy; gamma all ones" : RANDOM_PROBLEM, got, want, ROWS * COLS,
                    NULL);
}

// How much of dx's error (got - want) is NOT a multiple of xhat within its row: 0 when each row's
// error lies along xhat, as it does when the -xhat * mean(g * xhat) term is missing or off.
static double error_off_xhat(const double *got, const double *want, const float *x, const float *mean,
                             const float *rstd) {
    double off = 0, all = 0;
    for (int r = 0; r < ROWS; r++) {
        double xhat[COLS], e[COLS], ex = 0, xx = 0;
        for (int c = 0; c < COLS; c++) {
            xhat[c] = (x[r * COLS + c] - mean[r]) * (double)rstd[r];
            e[c] = got[r * COLS + c] - want[r * COLS + c];
            ex += e[c] * xhat[c], xx += xhat[c] * xhat[c];
        }
        for (int c = 0; c < COLS; c++) {
            double rest = e[c] - ex / xx * xhat[c];
            off += rest * rest, all += e[c] * e[c];
        }
    }
    return all > 0 ? sqrt(off / all) : 0.0;
}

// dx where -xhat * mean(g * xhat) is the only row-wide term: gamma all ones and every row of dy
// with mean 0, so mean(g) = 0; and dy leans on xhat, so mean(g * xhat) is far from 0. Then
// dx = rstd * (g - xhat * mean(g * xhat)), and a dx without that term, rstd * g, is off by O(1).
static void test_dx_mean_g_xhat_term(void **state) {
    (void)state;
    Problem p;
    make_problem(&p, 1);
    float y[ROWS * COLS], mean[ROWS], rstd[ROWS];
    ref_layernorm_forward(p.x, p.gamma, p.beta, ROWS, COLS, 1e-5f, y, mean, rstd);
    for (int r = 0; r < ROWS; r++) {  // dy = random + xhat, with its row mean taken out
        float *w = p.w + r * COLS;
        double m = 0;
        for (int c = 0; c < COLS; c++) w[c] += (float)((p.x[r * COLS + c] - mean[r]) * (double)rstd[r]), m += w[c];
        for (int c = 0; c < COLS; c++) w[c] -= (float)(m / COLS);
    }
    float dx[ROWS * COLS], dg[COLS], db[COLS];
    backward(&p, dx, dg, db);
    double got[ROWS * COLS], want[ROWS * COLS], without_term[ROWS * COLS];
    for (int i = 0; i < ROWS * COLS; i++) {
        got[i] = dx[i], want[i] = fd(&p, &p.x[i]);
        without_term[i] = (double)rstd[i / COLS] * p.w[i];  // rstd * (g - mean(g)): g = dy, mean(g) = 0
    }
    double diff = 0, norm = 0;
    for (int i = 0; i < ROWS * COLS; i++)
        diff += (got[i] - without_term[i]) * (got[i] - without_term[i]), norm += without_term[i] * without_term[i];
    const char *hint = NULL;
    if (sqrt(diff / norm) < 1e-3)
        hint = "Your dx is rstd * (g - mean(g)): it lacks the row-wide term -xhat * mean(g * xhat), which comes "
               "from rstd depending on every x of the row";
    else if (error_off_xhat(got, want, p.x, mean, rstd) < 0.05)
        hint = "In every row your dx is off by a multiple of xhat: look at the term -xhat * mean(g * xhat) (the "
               "only row-wide term here, where mean(g) = 0): its sign, and what is averaged";
    expect_fd_close("dx", "random x, beta; gamma all ones; every row of dy has mean 0 and leans on xhat", got, want,
                    ROWS * COLS, hint);
}

static void test_dx_unit_gamma(void **state) {
    (void)state;
    dx_case(1);
}

static void test_dx(void **state) {
    (void)state;
    dx_case(0);
}

// LayerNorm's output does not change when a constant is added to a row, so each row of dx
// sums to zero.
static void test_dx_rows_sum_to_zero(void **state) {
    (void)state;
    Problem p;
    make_problem(&p, 0);
    float dx[ROWS * COLS], dg[COLS], db[COLS];
    backward(&p, dx, dg, db);
    for (int r = 0; r < ROWS; r++) {
        double s = 0, a = 0;
        for (int c = 0; c < COLS; c++) s += dx[r * COLS + c], a += fabs(dx[r * COLS + c]);
        expect_true(a > 1e-3, "row %d of dx is all zero (sum of |dx| = %.3g): a LayerNorm passes gradient through", r,
                    a);
        expect_true(fabs(s) < 1e-4, "row %d of dx sums to %.3g, expected 0: adding a constant to a row of x does not "
                    "change LayerNorm's output, so its gradient along (1, ..., 1) is zero", r, s);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dbeta),         cmocka_unit_test(test_dgamma),
        cmocka_unit_test(test_dx_mean_g_xhat_term), cmocka_unit_test(test_dx_unit_gamma),
        cmocka_unit_test(test_dx),                  cmocka_unit_test(test_dx_rows_sum_to_zero),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
