// Checks for the graded tests (tools/grade.sh) that say what is wrong: which input, what was
// expected, what came out. The grader prints the first failing check's message under each
// failed test case, so a message must make sense on its own.
//
//   expect_int_eq(got, want, "fp8_encode(%g, %s)", x, name);
//       -> "fp8_encode(464, E4M3): got 0x7f (127), expected 0x7e (126)"
//   expect_close("y", got, want, rows, cols, 1e-3, "hint when it fails, or NULL");
//       -> "y is wrong: relative error 2.1e-01 (tolerance 1.0e-03); the worst element,
//           [row 3, col 17]: got 0.5, expected 0.75. hint"
#ifndef TESTS_EXERCISES_GRADING_H
#define TESTS_EXERCISES_GRADING_H

#include <stdint.h>

// Integers (shown in hex and decimal). The format names the input.
#define expect_int_eq(got, want, ...) \
    expect_int_eq_at((long long)(got), (long long)(want), __FILE__, __LINE__, __VA_ARGS__)
void expect_int_eq_at(long long got, long long want, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

// Floats that must be equal bit for bit (a copy, a sum of two floats): the format names the element.
#define expect_float_eq(got, want, ...) \
    expect_float_eq_at((double)(got), (double)(want), __FILE__, __LINE__, __VA_ARGS__)
void expect_float_eq_at(double got, double want, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

// A condition that must hold; the message says what it means when it does not.
#define expect_true(cond, ...) expect_true_at(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
void expect_true_at(int cond, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

// Relative error ||got - want|| / ||want|| over rows x cols values (cols = 0: a vector of rows
// values) must be at most tol. On failure the message names the worst element (a NaN first:
// outputs the tests hand out start as NaN, so a NaN is a value never written) and adds `hint`
// (may be NULL). Prints the error either way, so the log shows the margin.
void expect_close(const char *what, const float *got, const float *want, int64_t rows, int64_t cols,
                  double tol, const char *hint);

// The relative error expect_close measures (NaN if got has a NaN).
double relative_error(const float *got, const float *want, int64_t n);

// Fills x[0..n) with NaN: outputs a test hands out, so that one left unwritten cannot pass.
void fill_nan(float *x, int64_t n);

#endif  // TESTS_EXERCISES_GRADING_H
