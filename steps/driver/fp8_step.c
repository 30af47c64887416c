#include "steps/driver/fp8_step.h"

#include <stdlib.h>
#include <string.h>

#include "common/core/errors.h"
#include "common/fp8/fp8_format.h"

int fp8_recipe_parse_flag(DelayedScaling *recipe, const char *flag, const char *value) {
    if (!value) return 0;
    if (!strcmp(flag, "--fp8-format")) {
        if (!strcmp(value, "hybrid")) recipe->format = FP8_RECIPE_HYBRID;
        else if (!strcmp(value, "e4m3")) recipe->format = FP8_RECIPE_E4M3;
        else fail_user("--fp8-format expects hybrid or e4m3, got '%s'", value);
    } else if (!strcmp(flag, "--amax-history")) {
        recipe->history_len = atoi(value);
        if (recipe->history_len < 1 || recipe->history_len > 1024)
            fail_user("--amax-history expects 1..1024, got '%s'", value);
    } else if (!strcmp(flag, "--amax-algo")) {
        if (!strcmp(value, "max")) recipe->amax_algo = AMAX_ALGO_MAX;
        else if (!strcmp(value, "most_recent")) recipe->amax_algo = AMAX_ALGO_MOST_RECENT;
        else fail_user("--amax-algo expects max or most_recent, got '%s'", value);
    } else if (!strcmp(flag, "--margin")) {
        recipe->margin = atoi(value);
        if (recipe->margin < 0 || recipe->margin > 30) fail_user("--margin expects 0..30, got '%s'", value);
    } else {
        return 0;
    }
    return 1;
}

static void quantize_first_step(const RefQuantizer *q, float *x, int64_t n, int is_gradient) {
    const DelayedScaling *recipe = q->ctx;
    Fp8Format f = is_gradient && recipe->format == FP8_RECIPE_HYBRID ? FP8_E5M2 : FP8_E4M3;
    for (int64_t i = 0; i < n; i++) x[i] = fp8_decode(fp8_encode(x[i], f), f);
}

RefQuantizer fp8_first_step_quantizer(const DelayedScaling *recipe) {
    RefQuantizer q = {.quantize = quantize_first_step, .ctx = recipe};
    return q;
}

double fp8_check_tolerance(DType dtype) { return dtype == DTYPE_BF16 ? 7e-2 : 4.5e-2; }

double fp8_step_tolerance(const LayerConfig *cfg, int which) {
    (void)which;
    return fp8_check_tolerance(cfg->dtype);
}

const char *fp8_layer_unsupported(const LayerConfig *c) {
    if (c->hidden % 16 || c->ffn % 16 || layer_tokens(c) % 16)
        return "FP8 GEMMs need hidden, ffn and seq * batch to be multiples of 16";
    return NULL;
}
