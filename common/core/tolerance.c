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

static int report_line(FILE *log, const char *name, double err, double tol) {
    int ok = err <= tol;
    if (log) fprintf(log, "  %-24s rel.err %.3e   tol %.1e   %s\n", name, err, tol, ok ? "ok" : "FAIL");
    return ok;
}

int compare_results(const LayerConfig *cfg, const LayerResults *got, const LayerResults *ref,
                    double tol, FILE *log, double *max_err) {
    int64_t n = layer_tokens(cfg) * cfg->hidden;
    int all_ok = 1;
    double worst = 0.0, e;
    e = rel_error(got->out, ref->out, n);
    all_ok &= report_line(log, "out", e, tol);
    worst = fmax(worst, e);
    e = rel_error(got->dx, ref->dx, n);
    all_ok &= report_line(log, "dx", e, tol);
    worst = fmax(worst, e);
    for (int i = 0; i < NUM_PARAMS; i++) {
        char name[64];
        snprintf(name, sizeof name, "grad.%s", PARAM_NAMES[i]);
        e = rel_error(got->grad.tensor[i], ref->grad.tensor[i], param_numel(cfg, i));
        all_ok &= report_line(log, name, e, tol);
        worst = fmax(worst, e);
    }
    if (max_err) *max_err = worst;
    return all_ok;
}
