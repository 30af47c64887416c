// A small reader and writer of the safetensors format (the format of Hugging Face's
// `safetensors` library, which PyTorch users save state_dicts in):
//
//   bytes 0..7     N, the header's length, an unsigned 64-bit little-endian integer
//   bytes 8..8+N   the header: a JSON object
//                    { "<name>": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 48]},
//                      ...,
//                      "__metadata__": {"<key>": "<string>", ...} }    (optional)
//   the rest       the data section: every tensor's bytes, row-major, little-endian;
//                  data_offsets are [begin, end) relative to the start of this section
//
// The reader checks everything it can before trusting a number from the file, and reports
// any problem with fail_user (exit status 1) naming the file, the tensor and what is wrong:
// a file that came from somewhere else should never crash us or be silently misread.
// It reads F32, F16 and BF16 tensors, converting them to float; tensors of other dtypes may
// be present in a file (they are checked, then ignored) but cannot be read.
//
// The file stays open between st_open and st_close and each tensor is read on demand, so
// a multi-gigabyte file is never held in memory twice.
#ifndef COMMON_IO_SAFETENSORS_H
#define COMMON_IO_SAFETENSORS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// The dtypes we can read and write. ST_F32 is 0 so that a zero-initialised StWriteEntry
// stores float32.
typedef enum { ST_F32 = 0, ST_F16 = 1, ST_BF16 = 2, ST_OTHER = 3 } StDType;

#define ST_MAX_DIMS 8

typedef struct SafeTensors SafeTensors;

// Opens and validates a file (header, every entry, the data section's size). Never returns
// NULL: on any problem it prints a message naming the file and exits with status 1.
SafeTensors *st_open(const char *path);
void st_close(SafeTensors *st);

int st_count(const SafeTensors *st);                 // number of tensors (not __metadata__)
const char *st_name(const SafeTensors *st, int i);   // i-th tensor's name, sorted by name
int st_has(const SafeTensors *st, const char *name);
// A tensor's shape: returns its ndim and fills shape[0..ndim). Fails (exit 1) if missing.
int st_shape(const SafeTensors *st, const char *name, int64_t shape[ST_MAX_DIMS]);
// A metadata value, or NULL when the file has no such key.
const char *st_metadata(const SafeTensors *st, const char *key);

// Reads tensor `name` into out (as float). Fails (exit 1) when the tensor is missing
// (listing the names present), when its shape is not expected_shape[0..ndim), or when it
// is not stored as F32, F16 or BF16.
void st_read_f32(SafeTensors *st, const char *name, int ndim, const int64_t *expected_shape,
                 float *out);

// One tensor to write: float values, stored in the file as `dtype` (F32 unless asked:
// F16 and BF16 round to nearest even).
typedef struct {
    const char *name;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const float *data;
    StDType dtype;
} StWriteEntry;

// Writes a safetensors file with the entries in the given order (header keys and data
// alike). The file appears complete or not at all: it is written to "<path>.tmp" first,
// then renamed. Fails (exit 1) if the file cannot be written.
void st_write(const char *path, const StWriteEntry *entries, int n);

#ifdef __cplusplus
}
#endif

#endif  // COMMON_IO_SAFETENSORS_H
