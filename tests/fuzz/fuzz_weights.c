// libFuzzer harness for the weights reader: the input is a file's bytes. It is opened with
// st_open (common/io/safetensors.c), every tensor's shape asked and every small one read,
// then loaded as the layer's parameters and inputs (common/io/weights_io.c, with the dtype
// range check) at a tiny configuration whose shapes a fuzzer can build (hidden 8, ffn 8,
// heads 1, seq 2, batch 1). Refusals are expected; crashes, sanitizer reports and hangs are
// findings.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/io/safetensors.h"
#include "common/io/weights_io.h"
#include "tests/fuzz/fuzz_support.h"

static char path[256];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *dir = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/fuzz_weights_%d.safetensors", dir ? dir : "/tmp", (int)getpid());
    return 0;
}

static LayerConfig tiny(DType dtype) {
    LayerConfig c = layer_config_quickstart();
    c.hidden = 8, c.ffn = 8, c.heads = 1, c.seq = 2, c.batch = 1, c.dtype = dtype;
    return c;
}

static void read_everything(void) {
    static float buffer[1 << 16];
    SafeTensors *st = st_open(path);
    for (int i = 0; i < st_count(st); i++) {
        int64_t shape[ST_MAX_DIMS], numel = 1;
        int ndim = st_shape(st, st_name(st, i), shape);
        for (int d = 0; d < ndim; d++) numel = shape[d] && numel > (1 << 16) / shape[d] ? (1 << 17) : numel * shape[d];
        if (numel <= (1 << 16)) st_read_f32(st, st_name(st, i), ndim, shape, buffer);
    }
    st_metadata(st, "format");
    st_close(st);
}

static void load_as_layer(DType dtype) {
    const LayerConfig c = tiny(dtype);
    LayerParams p;
    LayerInputs in;
    layer_params_alloc(&c, &p);
    layer_inputs_alloc(&c, &in);
    load_layer_params(path, &c, &p);
    load_layer_inputs(path, &c, &in);
    layer_params_free(&p);
    layer_inputs_free(&in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size) abort();
    fclose(f);
    fuzz_begin();
    if (!setjmp(fuzz_exit_jump)) read_everything();
    fuzz_end();
    fuzz_begin();
    if (!setjmp(fuzz_exit_jump)) load_as_layer(size % 2 ? DTYPE_BF16 : DTYPE_FP16);
    fuzz_end();
    return 0;
}
