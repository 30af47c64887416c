#include "tests/check/check_inputs.h"

#include <math.h>

#include "common/core/half.h"

LayerConfig check_test_config(DType dtype) {
    LayerConfig c;
    layer_config_preset("small", &c);
    c.dtype = dtype;
    c.attn_dropout = c.hidden_dropout = 0.0f;
    return c;
}

// x moved up by `steps` steps of the dtype (x finite, non-negative).
static float steps_up(float x, int steps, DType dtype) {
    if (dtype == DTYPE_BF16) return bf16_to_float((uint16_t)(float_to_bf16(x) + steps));
    return fp16_to_float((uint16_t)(float_to_fp16(x) + steps));
}

void make_coherent_rounding_input(const LayerConfig *c, uint64_t seed, LayerParams *p, LayerInputs *in) {
    layer_params_init_random(c, seed, p);
    layer_params_round(c, p);
    const int h = c->hidden;
    float *r = in->x, *g = in->dy;  // row 0 of each holds r and g for now
    fill_uniform(r, h, 0.0f, 1.0f, seed, 11);
    fill_uniform(g, h, 0.0f, 1.0f, seed, 12);
    round_to_dtype(r, h, c->dtype);
    round_to_dtype(g, h, c->dtype);
    for (int64_t t = layer_tokens(c) - 1; t >= 0; t--)
        for (int j = 0; j < h; j++) {
            in->x[t * h + j] = t % 2 ? steps_up(r[j], COHERENT_NUDGE_STEPS, c->dtype) : r[j];
            in->dy[t * h + j] = t % 2 ? -g[j] : g[j];
        }
}

void make_random_input(const LayerConfig *c, uint64_t seed, LayerParams *p, LayerInputs *in) {
    layer_params_init_random(c, seed, p);
    layer_params_round(c, p);
    layer_inputs_init_random(c, seed + 1, in);
    layer_inputs_round(c, in);
}
