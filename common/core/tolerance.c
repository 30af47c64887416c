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

double unit_roundoff(DType dtype) { return dtype == DTYPE_BF16 ? 0x1p-8 : 0x1p-11; }

static double l2_norm(const float *x, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return sqrt(s);
}

// One tensor: its error, its tolerance and (if there was a noise run) the noise; 1 if it passes.
// mag: the tensor's magnitudes (a parameter gradient's, from the magnitude run) or NULL.
static int check_one(FILE *log, const char *name, const float *got, const float *ref, const float *noisy,
                     const float *mag, int64_t n, double floor, DType dtype, double *worst) {
    const double err = rel_error(got, ref, n);
    const double noise = noisy ? rel_error(noisy, ref, n) : 0.0;
    const double tol = noise_tolerance(floor, noise);
    const double ref_norm = l2_norm(ref, n);
    // A sum that cancels (CHECK_SUM_ROUNDINGS in tolerance.h): its reference is no larger than
    // the rounding error its sum may carry, so only an absolute check means anything.
    const double bound = mag ? CHECK_SUM_ROUNDINGS * unit_roundoff(dtype) * l2_norm(mag, n) : 0.0;
    const int cancels = mag && bound > 0.0 && bound >= ref_norm;
    const double abs_err = !isfinite(err) ? INFINITY : ref_norm > 0.0 ? err * ref_norm : err;
    const int ok = err <= tol || (cancels && abs_err <= bound);
    if (log && cancels) {
        fprintf(log, "  %-24s abs.err %.3e   tol %.1e   (cancels: ||ref|| %.1e <= %g u ||sum of |terms|||)   %s\n",
                name, abs_err, bound, ref_norm, CHECK_SUM_ROUNDINGS, ok ? "ok" : "FAIL");
    } else if (log) {
        fprintf(log, "  %-24s rel.err %.3e   tol %.1e", name, err, tol);
        if (noisy && !isfinite(noise)) fprintf(log, "   (noise run overflowed: the dtype cannot hold this input)");
        else if (noisy) fprintf(log, "   (noise %.1e%s)", noise, tol > floor ? ": 2 x noise" : "");
        fprintf(log, "   %s%s\n", ok ? "ok" : "FAIL", tol >= 0.5 ? " - mostly rounding at this dtype: a weak check" : "");
    }
    // A cancelling tensor's relative error means nothing: it does not count in the worst.
    *worst = fmax(*worst, cancels ? 0.0 : err);
    return ok;
}

int compare_results_with_noise(const LayerConfig *cfg, const LayerResults *got, const LayerResults *ref,
                               const LayerResults *noisy, const LayerResults *magnitudes, double floor, FILE *log,
                               double *max_err) {
    const int64_t n = layer_tokens(cfg) * cfg->hidden;
    int all_ok = 1;
    double worst = 0.0;
    all_ok &= check_one(log, "out", got->out, ref->out, noisy ? noisy->out : NULL, NULL, n, floor, cfg->dtype, &worst);
    all_ok &= check_one(log, "dx", got->dx, ref->dx, noisy ? noisy->dx : NULL, NULL, n, floor, cfg->dtype, &worst);
    for (int i = 0; i < NUM_PARAMS; i++) {
        char name[64];
        snprintf(name, sizeof name, "grad.%s", PARAM_NAMES[i]);
        all_ok &= check_one(log, name, got->grad.tensor[i], ref->grad.tensor[i],
                            noisy ? noisy->grad.tensor[i] : NULL, magnitudes ? magnitudes->grad.tensor[i] : NULL,
                            param_numel(cfg, i), floor, cfg->dtype, &worst);
    }
    if (max_err) *max_err = worst;
    return all_ok;
}

int compare_results(const LayerConfig *cfg, const LayerResults *got, const LayerResults *ref,
                    double tolerance, FILE *log, double *max_err) {
    return compare_results_with_noise(cfg, got, ref, NULL, NULL, tolerance, log, max_err);
}
