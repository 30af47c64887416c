// The layer's tensors in safetensors files, under PyTorch's state_dict names (layer.h:
// PARAM_NAMES), so that a file saved from the PyTorch quickstart loads here unchanged.
#include "common/io/weights_io.h"

#include <math.h>
#include <stdio.h>
#include <stdint.h>

#include "common/core/errors.h"
#include "common/io/safetensors.h"

// Formats a shape as "[2048, 4, 4096]".
static const char *shape_str(char buf[160], int ndim, const int64_t *shape) {
    int len = snprintf(buf, 160, "[");
    for (int d = 0; d < ndim && len < 160; d++)
        len += snprintf(buf + len, 160 - (size_t)len, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (len < 160) snprintf(buf + len, 160 - (size_t)len, "]");
    return buf;
}

// Checks a tensor's shape before reading it, so that a mismatch also shows the layer's
// configuration: the usual cause is a file saved for another preset or other flags.
static void check_shape(SafeTensors *st, const char *path, const LayerConfig *cfg,
                        const char *name, int ndim, const int64_t *shape) {
    int64_t found[ST_MAX_DIMS];
    int found_ndim = st_shape(st, name, found);
    int same = found_ndim == ndim;
    for (int d = 0; same && d < ndim; d++) same = found[d] == shape[d];
    if (!same) {
        char f[160], e[160];
        fail_user("'%s': tensor '%s' has shape %s, but the layer (hidden %d, ffn %d, heads %d, "
                  "seq %d, batch %d) needs %s",
                  path, name, shape_str(f, found_ndim, found), cfg->hidden, cfg->ffn,
                  cfg->heads, cfg->seq, cfg->batch, shape_str(e, ndim, shape));
    }
}

// Refuses a tensor holding a value that the layer's dtype cannot hold: rounded to fp16, 66246
// becomes inf, and every output it touches turns into inf or NaN. The message gives the
// value, where it is (multi-index and flat element number) and the dtype's range.
static void check_fits_dtype(const char *path, const LayerConfig *cfg, const char *name, int ndim,
                             const int64_t *shape, const float *x) {
    int64_t numel = 1;
    for (int d = 0; d < ndim; d++) numel *= shape[d];
    const int64_t bad = first_value_outside_dtype(x, numel, cfg->dtype);
    if (bad < 0) return;
    int64_t index[3] = {0}, rest = bad;
    for (int d = ndim - 1; d >= 0; d--) index[d] = rest % shape[d], rest /= shape[d];
    char where[160];
    shape_str(where, ndim, index);
    if (!isfinite(x[bad]))
        fail_user("'%s': tensor '%s' holds %g at index %s (element %lld of %lld): not a finite number", path, name,
                  x[bad], where, (long long)bad, (long long)numel);
    const double max = dtype_max(cfg->dtype);
    fail_user("'%s': tensor '%s' holds %.9g at index %s (element %lld of %lld), outside %s's range "
              "[-%.8g, %.8g]: stored as %s it would become an infinity.%s",
              path, name, x[bad], where, (long long)bad, (long long)numel, dtype_name(cfg->dtype), max, max,
              dtype_name(cfg->dtype),
              cfg->dtype == DTYPE_FP16 ? " Scale the values into range, or use --dtype bf16 (up to 3.39e+38)" : "");
}

void load_layer_params(const char *path, const LayerConfig *cfg, LayerParams *params) {
    SafeTensors *st = st_open(path);
    for (int i = 0; i < NUM_PARAMS; i++) {
        int64_t shape[2];
        int ndim = param_shape(cfg, i, shape);
        check_shape(st, path, cfg, PARAM_NAMES[i], ndim, shape);
        st_read_f32(st, PARAM_NAMES[i], ndim, shape, params->tensor[i]);
        check_fits_dtype(path, cfg, PARAM_NAMES[i], ndim, shape, params->tensor[i]);
    }
    st_close(st);
}

void load_layer_inputs(const char *path, const LayerConfig *cfg, LayerInputs *inputs) {
    SafeTensors *st = st_open(path);
    const int64_t shape[3] = {cfg->seq, cfg->batch, cfg->hidden};
    check_shape(st, path, cfg, "x", 3, shape);
    st_read_f32(st, "x", 3, shape, inputs->x);
    check_fits_dtype(path, cfg, "x", 3, shape, inputs->x);
    check_shape(st, path, cfg, "dy", 3, shape);
    st_read_f32(st, "dy", 3, shape, inputs->dy);
    check_fits_dtype(path, cfg, "dy", 3, shape, inputs->dy);
    st_close(st);
}

// One StWriteEntry per parameter, stored as F32 (lossless: host buffers are float), with
// names prefix + PARAM_NAMES[i]. names must hold NUM_PARAMS buffers of 64 chars.
static void param_entries(const LayerConfig *cfg, const LayerParams *p, const char *prefix,
                          char names[][64], StWriteEntry *out) {
    for (int i = 0; i < NUM_PARAMS; i++) {
        snprintf(names[i], 64, "%s%s", prefix, PARAM_NAMES[i]);
        out[i] = (StWriteEntry){.name = names[i], .data = p->tensor[i], .dtype = ST_F32};
        out[i].ndim = param_shape(cfg, i, out[i].shape);
    }
}

void save_layer_params(const char *path, const LayerConfig *cfg, const LayerParams *params) {
    char names[NUM_PARAMS][64];
    StWriteEntry entries[NUM_PARAMS];
    param_entries(cfg, params, "", names, entries);
    st_write(path, entries, NUM_PARAMS);
}

void save_layer_results(const char *path, const LayerConfig *cfg, const LayerResults *results) {
    char names[NUM_PARAMS][64];
    StWriteEntry entries[2 + NUM_PARAMS];
    const StWriteEntry act = {.ndim = 3, .shape = {cfg->seq, cfg->batch, cfg->hidden}};
    entries[0] = act;
    entries[0].name = "out";
    entries[0].data = results->out;
    entries[1] = act;
    entries[1].name = "dx";
    entries[1].data = results->dx;
    param_entries(cfg, &results->grad, "grad.", names, entries + 2);
    st_write(path, entries, 2 + NUM_PARAMS);
}
