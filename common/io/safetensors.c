// safetensors reading and writing (format: see common/io/safetensors.h).
//
// The reader never trusts a number from the file before checking it: the header length
// against the file's size, every shape and offset against the data section. Every check
// that fails says which file, which tensor, what was found and what was expected.
#include "common/io/safetensors.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "common/core/errors.h"
#include "common/core/half.h"
#include "common/io/output_file.h"

// Tensor bytes are little-endian in the file; we copy them straight into floats.
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian: this code assumes a little-endian host"
#endif

// The format's reference reader (Hugging Face's safetensors, MAX_HEADER_SIZE in
// safetensors/src/tensor.rs) refuses a header of more than 100,000,000 bytes - decimal, not
// 100 MiB - so a file with a longer one loads nowhere else and is refused here too. A real
// header is a few KB; a larger "length" means the file is not safetensors (or is damaged).
#define ST_MAX_HEADER_BYTES 100000000ull

// ---- dtypes -------------------------------------------------------------------------------

typedef struct {
    const char *name;
    int bytes;
    StDType code;  // ST_OTHER: a valid safetensors dtype that we do not convert to float
} DTypeInfo;

static const DTypeInfo DTYPES[] = {
    {"F32", 4, ST_F32},    {"F16", 2, ST_F16},   {"BF16", 2, ST_BF16},   {"F64", 8, ST_OTHER},
    {"I64", 8, ST_OTHER},  {"U64", 8, ST_OTHER}, {"I32", 4, ST_OTHER},   {"U32", 4, ST_OTHER},
    {"I16", 2, ST_OTHER},  {"U16", 2, ST_OTHER}, {"I8", 1, ST_OTHER},    {"U8", 1, ST_OTHER},
    {"BOOL", 1, ST_OTHER}, {"C64", 8, ST_OTHER}, {"F8_E4M3", 1, ST_OTHER}, {"F8_E5M2", 1, ST_OTHER},
};
#define NUM_DTYPES ((int)(sizeof DTYPES / sizeof DTYPES[0]))

static const DTypeInfo *dtype_lookup(const char *name) {
    for (int i = 0; i < NUM_DTYPES; i++)
        if (strcmp(DTYPES[i].name, name) == 0) return &DTYPES[i];
    return NULL;
}

static const DTypeInfo *dtype_of_code(StDType code) {
    for (int i = 0; i < NUM_DTYPES; i++)
        if (DTYPES[i].code == code) return &DTYPES[i];
    return NULL;
}

// ---- the open file ------------------------------------------------------------------------

typedef struct {
    char *name;
    const DTypeInfo *dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    uint64_t begin, end;  // byte offsets within the data section, [begin, end)
} StEntry;

struct SafeTensors {
    char *path;
    FILE *f;
    uint64_t data_start;  // 8 + header length
    int n;
    StEntry *entries;     // sorted by name
    json_t *metadata;     // the "__metadata__" object, or NULL
};

// Formats a shape as "[2048, 4, 4096]" into buf (for messages).
static const char *shape_str(char *buf, size_t size, int ndim, const int64_t *shape) {
    size_t len = (size_t)snprintf(buf, size, "[");
    for (int d = 0; d < ndim && len < size; d++)
        len += (size_t)snprintf(buf + len, size - len, "%s%" PRId64, d ? ", " : "", shape[d]);
    if (len < size) snprintf(buf + len, size - len, "]");
    return buf;
}

// Reads one header entry {"dtype", "shape", "data_offsets"} into e, checking each field.
static void parse_entry(const char *path, const char *name, json_t *value, StEntry *e) {
    if (!json_is_object(value))
        fail_user("'%s': tensor '%s': its header entry is not a JSON object", path, name);
    e->name = strdup(name);
    if (!e->name) DIE("out of memory");

    json_t *dtype = json_object_get(value, "dtype");
    if (!json_is_string(dtype))
        fail_user("'%s': tensor '%s' has no \"dtype\" string in the header", path, name);
    e->dtype = dtype_lookup(json_string_value(dtype));
    if (!e->dtype) {
        char known[256] = "";
        for (int i = 0; i < NUM_DTYPES; i++) {
            strcat(known, i ? ", " : "");
            strcat(known, DTYPES[i].name);
        }
        fail_user("'%s': tensor '%s' has unknown dtype \"%s\" (safetensors dtypes: %s)", path,
                  name, json_string_value(dtype), known);
    }

    json_t *shape = json_object_get(value, "shape");
    if (!json_is_array(shape))
        fail_user("'%s': tensor '%s' has no \"shape\" array in the header", path, name);
    if (json_array_size(shape) > ST_MAX_DIMS)
        fail_user("'%s': tensor '%s' has %zu dimensions; at most %d are supported", path, name,
                  json_array_size(shape), ST_MAX_DIMS);
    e->ndim = (int)json_array_size(shape);
    // The byte count is computed with an overflow check: a shape like [2^40, 2^40] must be
    // reported, not wrap around to a small number that happens to match the offsets.
    uint64_t bytes = (uint64_t)e->dtype->bytes;
    for (int d = 0; d < e->ndim; d++) {
        json_t *dim = json_array_get(shape, (size_t)d);
        if (!json_is_integer(dim) || json_integer_value(dim) < 0)
            fail_user("'%s': tensor '%s': shape entry %d is not a non-negative integer", path,
                      name, d);
        e->shape[d] = json_integer_value(dim);
        uint64_t dim_u = (uint64_t)e->shape[d];
        if (dim_u != 0 && bytes > (UINT64_C(1) << 62) / dim_u)
            fail_user("'%s': tensor '%s': shape is impossibly large", path, name);
        bytes *= dim_u;
    }

    json_t *offsets = json_object_get(value, "data_offsets");
    json_t *b = json_array_get(offsets, 0), *en = json_array_get(offsets, 1);
    if (!json_is_array(offsets) || json_array_size(offsets) != 2 || !json_is_integer(b) ||
        !json_is_integer(en) || json_integer_value(b) < 0 || json_integer_value(en) < 0)
        fail_user("'%s': tensor '%s': \"data_offsets\" must be [begin, end], two non-negative "
                  "integers",
                  path, name);
    e->begin = (uint64_t)json_integer_value(b);
    e->end = (uint64_t)json_integer_value(en);
    if (e->end < e->begin)
        fail_user("'%s': tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] end before they "
                  "begin",
                  path, name, e->begin, e->end);
    if (e->end - e->begin != bytes) {
        char s[160];
        fail_user("'%s': tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] hold %" PRIu64
                  " bytes, but shape %s of %s needs %" PRIu64 " bytes",
                  path, name, e->begin, e->end, e->end - e->begin,
                  shape_str(s, sizeof s, e->ndim, e->shape), e->dtype->name, bytes);
    }
}

static int cmp_by_offset(const void *a, const void *b) {
    const StEntry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return (x->end > y->end) - (x->end < y->end);
}

static int cmp_by_name(const void *a, const void *b) {
    return strcmp(((const StEntry *)a)->name, ((const StEntry *)b)->name);
}

// The data section must be exactly the tensors' bytes, back to back (as every writer
// produces and the reference reader requires): no gaps, no overlaps, nothing missing.
static void check_data_section(const char *path, StEntry *e, int n, uint64_t data_bytes) {
    uint64_t needed = 0;
    for (int i = 0; i < n; i++) needed += e[i].end - e[i].begin;
    if (data_bytes < needed)
        fail_user("'%s' is truncated: its header describes %" PRIu64 " bytes of tensor data, "
                  "but only %" PRIu64 " bytes follow the header",
                  path, needed, data_bytes);
    for (int i = 0; i < n; i++)
        if (e[i].end > data_bytes)
            fail_user("'%s': tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] are out of "
                      "range: the data section has %" PRIu64 " bytes",
                      path, e[i].name, e[i].begin, e[i].end, data_bytes);
    qsort(e, (size_t)n, sizeof *e, cmp_by_offset);
    uint64_t pos = 0;
    for (int i = 0; i < n; i++) {
        if (e[i].begin != pos)
            fail_user("'%s': tensor '%s' starts at byte %" PRIu64 " of the data section, but "
                      "the previous tensor ends at byte %" PRIu64 ": tensors must follow each "
                      "other without gaps or overlaps",
                      path, e[i].name, e[i].begin, pos);
        pos = e[i].end;
    }
    if (pos != data_bytes)
        fail_user("'%s': %" PRIu64 " unexpected bytes follow the last tensor's data", path,
                  data_bytes - pos);
}

SafeTensors *st_open(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_user("cannot open '%s': %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0) fail_user("cannot stat '%s': %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode)) fail_user("'%s' is not a regular file", path);
    uint64_t file_bytes = (uint64_t)sb.st_size;

    // The header length: 8 bytes, little-endian, decoded byte by byte.
    unsigned char len_bytes[8];
    if (file_bytes < 8 || fread(len_bytes, 1, 8, f) != 8)
        fail_user("'%s' is not a safetensors file: it has %" PRIu64 " bytes, fewer than the "
                  "8 that give the header's length",
                  path, file_bytes);
    uint64_t header_bytes = 0;
    for (int i = 7; i >= 0; i--) header_bytes = header_bytes << 8 | len_bytes[i];
    if (header_bytes > file_bytes - 8)
        fail_user("'%s' is not a valid safetensors file: its first 8 bytes give a header length "
                  "of %" PRIu64 " bytes, larger than the file (%" PRIu64 " bytes). Is it "
                  "truncated, or not a safetensors file?",
                  path, header_bytes, file_bytes);
    if (header_bytes > ST_MAX_HEADER_BYTES)
        fail_user("'%s' is not a valid safetensors file: its header length, %" PRIu64 " bytes, "
                  "is over the %llu bytes that the format's reference reader (safetensors) accepts",
                  path, header_bytes, ST_MAX_HEADER_BYTES);

    char *text = xmalloc((size_t)header_bytes);
    if (fread(text, 1, (size_t)header_bytes, f) != header_bytes)
        fail_user("cannot read the header of '%s': %s", path,
                  ferror(f) ? strerror(errno) : "unexpected end of file");
    json_error_t err;
    json_t *root = json_loadb(text, (size_t)header_bytes, JSON_REJECT_DUPLICATES, &err);
    free(text);
    if (!root)
        fail_user("'%s': the safetensors header is not valid JSON: line %d, column %d: %s", path,
                  err.line, err.column, err.text);
    if (!json_is_object(root))
        fail_user("'%s': the safetensors header is JSON but not an object {...}", path);

    SafeTensors *st = xcalloc(1, sizeof *st);
    st->path = strdup(path);
    if (!st->path) DIE("out of memory");
    st->f = f;
    st->data_start = 8 + header_bytes;
    st->entries = xcalloc(json_object_size(root), sizeof(StEntry));

    const char *key;
    json_t *value;
    json_object_foreach(root, key, value) {
        if (strcmp(key, "__metadata__") == 0) {
            // Free-form string-to-string annotations (e.g. {"format": "pt"}).
            if (!json_is_object(value))
                fail_user("'%s': \"__metadata__\" in the header is not a JSON object", path);
            const char *mkey;
            json_t *mval;
            json_object_foreach(value, mkey, mval) {
                if (!json_is_string(mval))
                    fail_user("'%s': \"__metadata__\" value for \"%s\" is not a string", path,
                              mkey);
            }
            st->metadata = json_incref(value);
            continue;
        }
        parse_entry(path, key, value, &st->entries[st->n++]);
    }
    json_decref(root);

    check_data_section(path, st->entries, st->n, file_bytes - st->data_start);
    qsort(st->entries, (size_t)st->n, sizeof(StEntry), cmp_by_name);
    return st;
}

void st_close(SafeTensors *st) {
    if (!st) return;
    fclose(st->f);
    for (int i = 0; i < st->n; i++) free(st->entries[i].name);
    free(st->entries);
    if (st->metadata) json_decref(st->metadata);
    free(st->path);
    free(st);
}

int st_count(const SafeTensors *st) { return st->n; }

const char *st_name(const SafeTensors *st, int i) {
    if (i < 0 || i >= st->n) DIE("tensor index %d out of range [0, %d)", i, st->n);
    return st->entries[i].name;
}

static const StEntry *find(const SafeTensors *st, const char *name) {
    StEntry key = {.name = (char *)name};
    return bsearch(&key, st->entries, (size_t)st->n, sizeof(StEntry), cmp_by_name);
}

int st_has(const SafeTensors *st, const char *name) { return find(st, name) != NULL; }

const char *st_metadata(const SafeTensors *st, const char *key) {
    return st->metadata ? json_string_value(json_object_get(st->metadata, key)) : NULL;
}

// A missing tensor: say which names the file does have, and point out a likely match
// (state_dicts saved from a bigger model carry a prefix, e.g. "layers.0.ln1.weight").
static _Noreturn void fail_missing(const SafeTensors *st, const char *name) {
    enum { SHOWN = 12 };
    char list[1024] = "";
    size_t len = 0;
    for (int i = 0; i < st->n && i < SHOWN && len < sizeof list; i++)
        len += (size_t)snprintf(list + len, sizeof list - len, "%s'%s'", i ? ", " : "",
                                st->entries[i].name);
    if (st->n > SHOWN && len < sizeof list)
        snprintf(list + len, sizeof list - len, ", ... (%d more)", st->n - SHOWN);
    const char *similar = NULL;
    size_t nlen = strlen(name);
    for (int i = 0; i < st->n && !similar; i++) {
        const char *c = st->entries[i].name;
        size_t clen = strlen(c);
        if (clen > nlen && strcmp(c + clen - nlen, name) == 0 && c[clen - nlen - 1] == '.')
            similar = c;
    }
    if (st->n == 0)
        fail_user("'%s' has no tensor named '%s': it has no tensors at all", st->path, name);
    if (similar)
        fail_user("'%s' has no tensor named '%s' (did you mean '%s'?); its %d tensors: %s",
                  st->path, name, similar, st->n, list);
    fail_user("'%s' has no tensor named '%s'; its %d tensors: %s", st->path, name, st->n, list);
}

int st_shape(const SafeTensors *st, const char *name, int64_t shape[ST_MAX_DIMS]) {
    const StEntry *e = find(st, name);
    if (!e) fail_missing(st, name);
    memcpy(shape, e->shape, sizeof e->shape);
    return e->ndim;
}

void st_read_f32(SafeTensors *st, const char *name, int ndim, const int64_t *expected_shape,
                 float *out) {
    const StEntry *e = find(st, name);
    if (!e) fail_missing(st, name);
    int same = e->ndim == ndim;
    for (int d = 0; same && d < ndim; d++) same = e->shape[d] == expected_shape[d];
    if (!same) {
        char found[160], expected[160];
        fail_user("'%s': tensor '%s' has shape %s, but %s was expected", st->path, name,
                  shape_str(found, sizeof found, e->ndim, e->shape),
                  shape_str(expected, sizeof expected, ndim, expected_shape));
    }
    if (e->dtype->code == ST_OTHER)
        fail_user("'%s': tensor '%s' is stored as %s; only F32, F16 and BF16 can be read", st->path,
                  name, e->dtype->name);

    const uint64_t numel = (e->end - e->begin) / (uint64_t)e->dtype->bytes;
    if (fseeko(st->f, (off_t)(st->data_start + e->begin), SEEK_SET) != 0)
        fail_user("cannot seek in '%s': %s", st->path, strerror(errno));
    // The file was the right size at st_open; a short read now means it changed since.
    const char *short_read = "unexpected end of file (did the file change while being read?)";
    if (e->dtype->code == ST_F32) {
        if (fread(out, 4, numel, st->f) != numel)
            fail_user("cannot read tensor '%s' from '%s': %s", name, st->path,
                      ferror(st->f) ? strerror(errno) : short_read);
        return;
    }
    // 16-bit values: read a chunk at a time and widen to float.
    enum { CHUNK = 1 << 16 };
    uint16_t *buf = xmalloc(CHUNK * sizeof(uint16_t));
    for (uint64_t i = 0; i < numel; i += CHUNK) {
        size_t count = numel - i < CHUNK ? (size_t)(numel - i) : CHUNK;
        if (fread(buf, 2, count, st->f) != count)
            fail_user("cannot read tensor '%s' from '%s': %s", name, st->path,
                      ferror(st->f) ? strerror(errno) : short_read);
        for (size_t j = 0; j < count; j++)
            out[i + j] = e->dtype->code == ST_F16 ? fp16_to_float(buf[j]) : bf16_to_float(buf[j]);
    }
    free(buf);
}

// ---- writing ------------------------------------------------------------------------------

static uint64_t entry_numel(const StWriteEntry *w) {
    uint64_t n = 1;
    for (int d = 0; d < w->ndim; d++) n *= (uint64_t)w->shape[d];
    return n;
}

// Writes one tensor's values in its storage dtype. Returns 0 on a write error.
static int write_data(FILE *f, const StWriteEntry *w) {
    uint64_t numel = entry_numel(w);
    if (w->dtype == ST_F32) return fwrite(w->data, 4, numel, f) == numel;
    enum { CHUNK = 1 << 16 };
    uint16_t *buf = xmalloc(CHUNK * sizeof(uint16_t));
    int ok = 1;
    for (uint64_t i = 0; i < numel && ok; i += CHUNK) {
        size_t count = numel - i < CHUNK ? (size_t)(numel - i) : CHUNK;
        for (size_t j = 0; j < count; j++)
            buf[j] = w->dtype == ST_F16 ? float_to_fp16(w->data[i + j])
                                        : float_to_bf16(w->data[i + j]);
        ok = fwrite(buf, 2, count, f) == count;
    }
    free(buf);
    return ok;
}

void st_write(const char *path, const StWriteEntry *entries, int n) {
    // The header, with keys in the caller's order (jansson keeps insertion order).
    json_t *root = json_object();
    uint64_t offset = 0;
    for (int i = 0; i < n; i++) {
        const StWriteEntry *w = &entries[i];
        if (!w->name || strcmp(w->name, "__metadata__") == 0)
            DIE("st_write: entry %d has an invalid name", i);
        if (json_object_get(root, w->name)) DIE("st_write: duplicate tensor name '%s'", w->name);
        if (w->ndim < 0 || w->ndim > ST_MAX_DIMS) DIE("st_write: '%s': ndim %d", w->name, w->ndim);
        if (w->dtype != ST_F32 && w->dtype != ST_F16 && w->dtype != ST_BF16)
            DIE("st_write: '%s': unsupported storage dtype %d", w->name, (int)w->dtype);
        json_t *shape = json_array();
        for (int d = 0; d < w->ndim; d++) {
            if (w->shape[d] < 0) DIE("st_write: '%s': negative dimension", w->name);
            json_array_append_new(shape, json_integer(w->shape[d]));
        }
        uint64_t bytes = entry_numel(w) * (uint64_t)dtype_of_code(w->dtype)->bytes;
        if (bytes && !w->data) DIE("st_write: '%s' has no data", w->name);
        json_t *entry = json_pack("{s:s, s:o, s:[I, I]}", "dtype", dtype_of_code(w->dtype)->name,
                                  "shape", shape, "data_offsets", (json_int_t)offset,
                                  (json_int_t)(offset + bytes));
        if (!entry) DIE("st_write: json_pack failed for '%s'", w->name);
        json_object_set_new(root, w->name, entry);
        offset += bytes;
    }
    char *header = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!header) DIE("st_write: json_dumps failed");
    // Pad the header with spaces (JSON whitespace) to a multiple of 8 bytes, so that the
    // data section starts 8-byte aligned, as the format recommends.
    size_t header_len = strlen(header);
    size_t padded = (header_len + 7) & ~(size_t)7;
    unsigned char len_bytes[8];
    for (int i = 0; i < 8; i++) len_bytes[i] = (unsigned char)((uint64_t)padded >> (8 * i));

    // Written beside the target and renamed at the end (common/io/output_file.h): an
    // interrupted run never leaves a half-written file under the real name.
    FILE *f = output_open(path, "wb");
    int ok = fwrite(len_bytes, 1, 8, f) == 8 && fwrite(header, 1, header_len, f) == header_len;
    for (size_t i = header_len; i < padded && ok; i++) ok = fputc(' ', f) != EOF;
    for (int i = 0; i < n && ok; i++) ok = write_data(f, &entries[i]);
    free(header);
    output_commit(f, path);
}
