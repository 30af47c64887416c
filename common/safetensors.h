// A small reader and writer of the safetensors format (what PyTorch users save weights in).
//
//   [8 bytes: N, little-endian u64][N bytes: JSON header][data]
//   header: {"name": {"dtype": "F32"|"F16"|"BF16", "shape": [..], "data_offsets": [begin, end]},
//            ..., "__metadata__": {...}}        offsets are relative to the start of data
//
// Reading validates everything it relies on, and every problem ends the program with a
// message naming the file and the tensor (fail_user): a missing file, a header that is not
// JSON, offsets outside the file (a truncated file), a shape or dtype that does not match.
#ifndef COMMON_SAFETENSORS_H
#define COMMON_SAFETENSORS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { ST_F32, ST_F16, ST_BF16 } StDType;

typedef struct SafeTensors SafeTensors;

// Opens and validates a file (the whole file is read into memory).
SafeTensors *st_open(const char *path);
void st_close(SafeTensors *st);
int st_has(const SafeTensors *st, const char *name);
// Reads tensor `name`, which must have exactly the shape `shape[0..ndim)`, converting its
// values to float into `out`.
void st_read_f32(const SafeTensors *st, const char *name, int ndim, const int64_t *shape, float *out);

typedef struct {
    const char *name;
    int ndim;
    int64_t shape[4];
    const float *data;
    StDType dtype;  // how to store it (values are rounded to nearest even for F16/BF16)
} StEntry;

// Writes the entries to `path` (fail_user if the file cannot be written).
void st_write(const char *path, const StEntry *entries, int count);

#ifdef __cplusplus
}
#endif

#endif  // COMMON_SAFETENSORS_H
