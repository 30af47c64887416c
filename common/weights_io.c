#include "common/weights_io.h"

#include <stdio.h>

#include "common/safetensors.h"

void load_layer_params(const char *path, const LayerConfig *cfg, LayerParams *params) {
    SafeTensors *st = st_open(path);
    for (int i = 0; i < NUM_PARAMS; i++) {
        int64_t shape[2];
        int ndim = param_shape(cfg, i, shape);
        st_read_f32(st, PARAM_NAMES[i], ndim, shape, params->tensor[i]);
    }
    st_close(st);
}

void load_layer_inputs(const char *path, const LayerConfig *cfg, LayerInputs *inputs) {
    SafeTensors *st = st_open(path);
    int64_t shape[3] = {cfg->seq, cfg->batch, cfg->hidden};
    st_read_f32(st, "x", 3, shape, inputs->x);
    st_read_f32(st, "dy", 3, shape, inputs->dy);
    st_close(st);
}

static StEntry param_entry(const LayerConfig *cfg, int id, const char *name, const float *data) {
    StEntry e = {.name = name, .data = data, .dtype = ST_F32};
    int64_t shape[2];
    e.ndim = param_shape(cfg, id, shape);
    e.shape[0] = shape[0];
    e.shape[1] = shape[1];
    return e;
}

void save_layer_params(const char *path, const LayerConfig *cfg, const LayerParams *params) {
    StEntry entries[NUM_PARAMS];
    for (int i = 0; i < NUM_PARAMS; i++) entries[i] = param_entry(cfg, i, PARAM_NAMES[i], params->tensor[i]);
    st_write(path, entries, NUM_PARAMS);
}

void save_layer_results(const char *path, const LayerConfig *cfg, const LayerResults *results) {
    StEntry entries[2 + NUM_PARAMS];
    char names[NUM_PARAMS][64];
    StEntry out = {.name = "out", .ndim = 3, .shape = {cfg->seq, cfg->batch, cfg->hidden}, .data = results->out};
    StEntry dx = out;
    dx.name = "dx";
    dx.data = results->dx;
    entries[0] = out;
    entries[1] = dx;
    for (int i = 0; i < NUM_PARAMS; i++) {
        snprintf(names[i], sizeof names[i], "grad.%s", PARAM_NAMES[i]);
        entries[2 + i] = param_entry(cfg, i, names[i], results->grad.tensor[i]);
    }
    st_write(path, entries, 2 + NUM_PARAMS);
}
