#include "common/fp8/fp8_recipe.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>

#include "common/core/errors.h"

DelayedScaling delayed_scaling_default(void) {
    DelayedScaling r = {.format = FP8_RECIPE_HYBRID, .margin = 0, .history_len = 16, .amax_algo = AMAX_ALGO_MAX};
    return r;
}

void fp8_meta_init(Fp8Meta *m, const DelayedScaling *recipe, int is_gradient) {
    if (recipe->history_len < 1) fail_user("the amax history needs at least one entry (got %d)", recipe->history_len);
    m->format = (recipe->format == FP8_RECIPE_HYBRID && is_gradient) ? FP8_E5M2 : FP8_E4M3;
    m->scale = m->scale_inv = 1.0f;
    m->history_len = recipe->history_len;
    m->amax_history = xcalloc((size_t)recipe->history_len, sizeof(float));
}

void fp8_meta_free(Fp8Meta *m) {
    free(m->amax_history);
    m->amax_history = NULL;
}

void fp8_meta_record_amax(Fp8Meta *m, float amax) {
    if (amax > m->amax_history[0] || isnan(amax)) m->amax_history[0] = amax;
}

void fp8_update_scale(Fp8Meta *m, const DelayedScaling *recipe) {
    float amax = m->amax_history[0];
    if (recipe->amax_algo == AMAX_ALGO_MAX)
        for (int i = 1; i < m->history_len; i++) amax = fmaxf(amax, m->amax_history[i]);
    m->scale = fp8_compute_scale(amax, fp8_max(m->format), recipe->margin, m->scale);
    m->scale_inv = 1.0f / m->scale;
    for (int i = m->history_len - 1; i > 0; i--) m->amax_history[i] = m->amax_history[i - 1];
    m->amax_history[0] = 0.0f;
}
