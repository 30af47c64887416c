#include "steps/driver/fp8_step.h"

#include <stdlib.h>
#include <string.h>

#include "common/core/errors.h"
#include "common/core/flags.h"
#include "common/fp8/fp8_format.h"

int fp8_recipe_parse_flag(DelayedScaling *recipe, const char *flag, const char *value) {
    static const char *const FORMATS[] = {"hybrid", "e4m3"}, *const ALGOS[] = {"max", "most_recent"};
    if (!value) return 0;
    if (!strcmp(flag, "--fp8-format"))
        recipe->format = parse_choice_flag(flag, value, FORMATS, 2) ? FP8_RECIPE_E4M3 : FP8_RECIPE_HYBRID;
    else if (!strcmp(flag, "--amax-history")) recipe->history_len = (int)parse_int_flag(flag, value, 1, 1024);
    else if (!strcmp(flag, "--amax-algo"))
        recipe->amax_algo = parse_choice_flag(flag, value, ALGOS, 2) ? AMAX_ALGO_MOST_RECENT : AMAX_ALGO_MAX;
    else if (!strcmp(flag, "--margin")) recipe->margin = (int)parse_int_flag(flag, value, 0, 30);
    else return 0;
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
