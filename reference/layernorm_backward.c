// LayerNorm backward, the reference solution of the exercise "layernorm_backward".
#include <math.h>
#include <stdlib.h>

#include "common/core/errors.h"
#include "reference/reference.h"

// With xhat = (x - mean) * rstd and g = dy * gamma:
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  dgamma = sum_rows dy * xhat,  dbeta = sum_rows dy
void ref_layernorm_backward(const float *dy, const float *x, const float *gamma, const float *mean,
                            const float *rstd, int64_t rows, int cols, float *dx, float *dgamma,
                            float *dbeta) {
    double *dg = xcalloc((size_t)cols, sizeof(double)), *db = xcalloc((size_t)cols, sizeof(double));
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols, *dyr = dy + r * cols;
        double mean_g = 0.0, mean_g_xhat = 0.0;
        for (int c = 0; c < cols; c++) {
            double xhat = (xr[c] - mean[r]) * (double)rstd[r];
            double g = (double)dyr[c] * gamma[c];
            mean_g += g;
            mean_g_xhat += g * xhat;
            dg[c] += (double)dyr[c] * xhat;
            db[c] += dyr[c];
        }
        mean_g /= cols;
        mean_g_xhat /= cols;
        for (int c = 0; c < cols; c++) {
            double xhat = (xr[c] - mean[r]) * (double)rstd[r];
            double g = (double)dyr[c] * gamma[c];
            dx[r * cols + c] = (float)(rstd[r] * (g - mean_g - xhat * mean_g_xhat));
        }
    }
    for (int c = 0; c < cols; c++) {
        dgamma[c] = (float)dg[c];
        dbeta[c] = (float)db[c];
    }
    free(dg);
    free(db);
}
