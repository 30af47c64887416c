#include "common/safetensors.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "common/half.h"

typedef struct {
    char *name;
    StDType dtype;
    int ndim;
    int64_t shape[8];
    uint64_t begin, end;  // byte offsets into the data section
} StTensor;

struct SafeTensors {
    char *path;
    unsigned char *bytes;  // the whole file
    uint64_t data_start, data_size;
    StTensor *tensors;
    int count;
};

static size_t dtype_size(StDType t) { return t == ST_F32 ? 4 : 2; }

static const char *dtype_string(StDType t) { return t == ST_F32 ? "F32" : t == ST_F16 ? "F16" : "BF16"; }

static unsigned char *read_file(const char *path, uint64_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_user("cannot open %s: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0) fail_user("cannot read %s: %s", path, strerror(errno));
    long n = ftell(f);
    if (n < 0) fail_user("cannot read %s: %s", path, strerror(errno));
    rewind(f);
    unsigned char *buf = xmalloc((size_t)n + 1);
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) fail_user("cannot read %s: short read", path);
    fclose(f);
    *size = (uint64_t)n;
    return buf;
}

// Parses one header entry: {"dtype": .., "shape": [..], "data_offsets": [b, e]}.
static void parse_entry(const SafeTensors *st, const char *name, json_t *v, StTensor *t) {
    if (!json_is_object(v)) fail_user("%s: header entry '%s' is not an object", st->path, name);
    json_t *dtype = json_object_get(v, "dtype"), *shape = json_object_get(v, "shape");
    json_t *offsets = json_object_get(v, "data_offsets");
    if (!json_is_string(dtype) || !json_is_array(shape) || !json_is_array(offsets))
        fail_user("%s: tensor '%s' needs \"dtype\", \"shape\" and \"data_offsets\"", st->path, name);
    const char *d = json_string_value(dtype);
    if (!strcmp(d, "F32")) t->dtype = ST_F32;
    else if (!strcmp(d, "F16")) t->dtype = ST_F16;
    else if (!strcmp(d, "BF16")) t->dtype = ST_BF16;
    else fail_user("%s: tensor '%s' has dtype %s; supported: F32, F16, BF16", st->path, name, d);
    t->ndim = (int)json_array_size(shape);
    if (t->ndim > 8) fail_user("%s: tensor '%s' has %d dimensions (at most 8)", st->path, name, t->ndim);
    uint64_t numel = 1;
    for (int i = 0; i < t->ndim; i++) {
        json_t *s = json_array_get(shape, (size_t)i);
        if (!json_is_integer(s) || json_integer_value(s) < 0)
            fail_user("%s: tensor '%s' has a shape entry that is not a non-negative integer", st->path, name);
        t->shape[i] = json_integer_value(s);
        numel *= (uint64_t)t->shape[i];
    }
    if (json_array_size(offsets) != 2 || !json_is_integer(json_array_get(offsets, 0)) ||
        !json_is_integer(json_array_get(offsets, 1)))
        fail_user("%s: tensor '%s': data_offsets must be [begin, end]", st->path, name);
    json_int_t b = json_integer_value(json_array_get(offsets, 0));
    json_int_t e = json_integer_value(json_array_get(offsets, 1));
    if (b < 0 || e < b) fail_user("%s: tensor '%s' has bad data_offsets [%lld, %lld]", st->path, name, (long long)b, (long long)e);
    t->begin = (uint64_t)b;
    t->end = (uint64_t)e;
    if (t->end - t->begin != numel * dtype_size(t->dtype))
        fail_user("%s: tensor '%s': data_offsets cover %llu bytes, but shape and dtype need %llu",
                  st->path, name, (unsigned long long)(t->end - t->begin),
                  (unsigned long long)(numel * dtype_size(t->dtype)));
    if (t->end > st->data_size)
        fail_user("%s: truncated file: tensor '%s' ends at byte %llu of the data, which has only %llu bytes",
                  st->path, name, (unsigned long long)t->end, (unsigned long long)st->data_size);
    t->name = xmalloc(strlen(name) + 1);
    strcpy(t->name, name);
}

SafeTensors *st_open(const char *path) {
    SafeTensors *st = xcalloc(1, sizeof *st);
    st->path = xmalloc(strlen(path) + 1);
    strcpy(st->path, path);
    uint64_t size;
    st->bytes = read_file(path, &size);
    if (size < 8) fail_user("%s: not a safetensors file (only %llu bytes)", path, (unsigned long long)size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | st->bytes[i];  // little-endian
    if (n > size - 8)
        fail_user("%s: header length %llu is larger than the file (%llu bytes): truncated or not safetensors",
                  path, (unsigned long long)n, (unsigned long long)size);
    json_error_t err;
    json_t *root = json_loadb((const char *)st->bytes + 8, (size_t)n, 0, &err);
    if (!root) fail_user("%s: the header is not valid JSON (line %d, column %d: %s)", path, err.line, err.column, err.text);
    if (!json_is_object(root)) fail_user("%s: the header is not a JSON object", path);
    st->data_start = 8 + n;
    st->data_size = size - st->data_start;
    st->tensors = xcalloc(json_object_size(root) + 1, sizeof(StTensor));
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value) {
        if (!strcmp(key, "__metadata__")) continue;
        parse_entry(st, key, value, &st->tensors[st->count++]);
    }
    json_decref(root);
    return st;
}

void st_close(SafeTensors *st) {
    if (!st) return;
    for (int i = 0; i < st->count; i++) free(st->tensors[i].name);
    free(st->tensors);
    free(st->bytes);
    free(st->path);
    free(st);
}

static const StTensor *find(const SafeTensors *st, const char *name) {
    for (int i = 0; i < st->count; i++)
        if (!strcmp(st->tensors[i].name, name)) return &st->tensors[i];
    return NULL;
}

int st_has(const SafeTensors *st, const char *name) { return find(st, name) != NULL; }

static void format_shape(char *buf, size_t size, int ndim, const int64_t *shape) {
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < ndim && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (used < size) snprintf(buf + used, size - used, "]");
}

void st_read_f32(const SafeTensors *st, const char *name, int ndim, const int64_t *shape, float *out) {
    const StTensor *t = find(st, name);
    if (!t) {
        char present[512] = "";
        size_t used = 0;
        for (int i = 0; i < st->count && i < 8 && used < sizeof present; i++)
            used += (size_t)snprintf(present + used, sizeof present - used, "%s%s", i ? ", " : "", st->tensors[i].name);
        fail_user("%s: no tensor named '%s' (the file has %d: %s%s)", st->path, name, st->count, present,
                  st->count > 8 ? ", ..." : "");
    }
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same) {
        char want[128], have[128];
        format_shape(want, sizeof want, ndim, shape);
        format_shape(have, sizeof have, t->ndim, t->shape);
        fail_user("%s: tensor '%s' has shape %s, expected %s", st->path, name, have, want);
    }
    const unsigned char *p = st->bytes + st->data_start + t->begin;
    uint64_t n = (t->end - t->begin) / dtype_size(t->dtype);
    for (uint64_t i = 0; i < n; i++) {
        if (t->dtype == ST_F32) {
            memcpy(&out[i], p + 4 * i, 4);
        } else {
            uint16_t h = (uint16_t)(p[2 * i] | (p[2 * i + 1] << 8));
            out[i] = t->dtype == ST_F16 ? fp16_to_float(h) : bf16_to_float(h);
        }
    }
}

void st_write(const char *path, const StEntry *entries, int count) {
    json_t *root = json_object();
    uint64_t offset = 0;
    for (int i = 0; i < count; i++) {
        const StEntry *e = &entries[i];
        json_t *shape = json_array();
        uint64_t numel = 1;
        for (int d = 0; d < e->ndim; d++) {
            json_array_append_new(shape, json_integer(e->shape[d]));
            numel *= (uint64_t)e->shape[d];
        }
        uint64_t bytes = numel * dtype_size(e->dtype);
        json_t *entry = json_pack("{s:s, s:o, s:[I, I]}", "dtype", dtype_string(e->dtype), "shape", shape,
                                  "data_offsets", (json_int_t)offset, (json_int_t)(offset + bytes));
        json_object_set_new(root, e->name, entry);
        offset += bytes;
    }
    char *header = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    size_t n = strlen(header), padded = (n + 7) / 8 * 8;  // data starts 8-byte aligned
    FILE *f = fopen(path, "wb");
    if (!f) fail_user("cannot write %s: %s", path, strerror(errno));
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    fwrite(len, 1, 8, f);
    fwrite(header, 1, n, f);
    for (size_t i = n; i < padded; i++) fputc(' ', f);  // the format allows trailing spaces
    free(header);
    for (int i = 0; i < count; i++) {
        const StEntry *e = &entries[i];
        uint64_t numel = 1;
        for (int d = 0; d < e->ndim; d++) numel *= (uint64_t)e->shape[d];
        for (uint64_t k = 0; k < numel; k++) {
            if (e->dtype == ST_F32) {
                fwrite(&e->data[k], 4, 1, f);
            } else {
                uint16_t h = e->dtype == ST_F16 ? float_to_fp16(e->data[k]) : float_to_bf16(e->data[k]);
                unsigned char b[2] = {(unsigned char)h, (unsigned char)(h >> 8)};
                fwrite(b, 1, 2, f);
            }
        }
    }
    if (fclose(f) != 0) fail_user("cannot write %s: %s", path, strerror(errno));
}
