// EXERCISE "layernorm_backward" (CPU, chapter 00; graded by tests/exercises/layernorm_backward_test.c:
// tools/grade.sh layernorm_backward).
//
// Write the backward pass of LayerNorm over the last axis. The forward was
//     mean_r = (1/C) sum_c x[r,c]
//     rstd_r = 1 / sqrt((1/C) sum_c (x[r,c] - mean_r)^2 + eps)
//     xhat   = (x - mean_r) * rstd_r
//     y      = xhat * gamma + beta
// and it saved mean and rstd for you. Given dy (the gradient of the loss with respect to y),
// compute (overwriting the outputs: the test hands them to you filled with NaN):
//     dgamma[c] = sum over rows of dy * xhat
//     dbeta[c]  = sum over rows of dy
//     dx[r,c]   = ?   (derive it: xhat depends on x through mean and rstd too)
// Hints: write g = dy * gamma. Both mean_r and rstd_r depend on every x in the row, so each
// dx[r,c] picks up two row-wide terms: one from mean(g), one from mean(g * xhat).
// Accumulate in double. Check yourself with `tools/grade.sh layernorm_backward`.
#include "reference/reference.h"

void ref_layernorm_backward(const float *dy, const float *x, const float *gamma, const float *mean,
                            const float *rstd, int64_t rows, int cols, float *dx, float *dgamma,
                            float *dbeta) {
    (void)dy, (void)x, (void)gamma, (void)mean, (void)rstd;
    // TODO: your code here. This stub only clears the outputs.
    for (int64_t i = 0; i < rows * cols; i++) dx[i] = 0.0f;
    for (int c = 0; c < cols; c++) dgamma[c] = dbeta[c] = 0.0f;
}
