#include "common/core/tolerance.h"

#include <math.h>

double rel_error(const float *a, const float *ref, int64_t n) {
    double diff = 0.0, norm = 0.0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(a[i])) return INFINITY;
        double d = (double)a[i] - (double)ref[i];
        diff += d * d;
        norm += (double)ref[i] * ref[i];
    }
    return norm > 0.0 ? sqrt(diff / norm) : sqrt(diff);
}

double check_tolerance(DType dtype) { return dtype == DTYPE_BF16 ? 2e-2 : 4e-3; }

// A noise run that overflowed (an activation beyond the dtype's range) measures nothing: the
// floor alone then, and a GPU result holding the same infinities fails it.
double noise_tolerance(double floor, double noise) {
    return isfinite(noise) ? fmax(floor, CHECK_NOISE_FACTOR * noise) : floor;
}

// One tensor: its error, its tolerance and (if there was a noise run) the noise; 1 if it passes.
static int check_one(FILE *log, const char *name, const float *got, const float *ref, const float *noisy,
                     int64_t n, double floor, double *worst) {
    const double err = rel_error(got, ref, n);
    const double noise = noisy ? rel_error(noisy, ref, n) : 0.0;
    const double tol = noise_tolerance(floor, noise);
    const int ok = err <= tol;
    if (log) {
        fprintf(log, "  %-24s rel.err %.3e   tol %.1e", name, err, tol);
        if (noisy && !isfinite(noise)) fprintf(log, "   (noise run overflowed: the dtype cannot hold this input)");
        else if (noisy) fprintf(log, "   (noise %.1e%s)", noise, tol > floor ? ": 2 x noise" : "");
        fprintf(log, "   %s%s\n", ok ? "ok" : "FAIL", tol >= 0.5 ? " - mostly rounding at this dtype: a weak check" : "");
    }
    *worst = fmax(*worst, err);
    return ok;
}

int compare_results_with_noise(const LayerConfig *cfg, const LayerResults *got, const LayerResults *ref,
                               const LayerResults *noisy, double floor, FILE *log, double *max_err) {
    const int64_t n = layer_tokens(cfg) * cfg->hidden;
    int all_ok = 1;
    double worst = 0.0;
    all_ok &= check_one(log, "out", got->out, ref->out, noisy ? noisy->out : NULL, n, floor, &worst);
    all_ok &= check_one(log, "dx", got->dx, ref->dx, noisy ? noisy->dx : NULL, n, floor, &worst);
    for (int i = 0; i < NUM_PARAMS; i++) {
        char name[64];
        snprintf(name, sizeof name, "grad.%s", PARAM_NAMES[i]);
        all_ok &= check_one(log, name, got->grad.tensor[i], ref->grad.tensor[i],
                            noisy ? noisy->grad.tensor[i] : NULL, param_numel(cfg, i), floor, &worst);
    }
    if (max_err) *max_err = worst;
    return all_ok;
}

int compare_results(const LayerConfig *cfg, const LayerResults *got, const LayerResults *ref,
                    double tolerance, FILE *log, double *max_err) {
    return compare_results_with_noise(cfg, got, ref, NULL, tolerance, log, max_err);
}
