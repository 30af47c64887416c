// Writes the weights fuzzer's seed corpus into the folder given: a valid file of the tiny
// layer's parameters and inputs together (F32, F16 and BF16 tensors, metadata), and a few
// smaller valid files, so that the fuzzer starts from what the reader accepts.
#include <stdio.h>
#include <string.h>

#include "common/core/layer.h"
#include "common/io/safetensors.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: make_seeds DIR\n");
        return 2;
    }
    LayerConfig c = layer_config_quickstart();
    c.hidden = 8, c.ffn = 8, c.heads = 1, c.seq = 2, c.batch = 1;
    LayerParams p;
    LayerInputs in;
    layer_params_alloc(&c, &p);
    layer_inputs_alloc(&c, &in);
    layer_params_init_random(&c, 1, &p);
    layer_inputs_init_random(&c, 2, &in);
    StWriteEntry e[NUM_PARAMS + 2];
    for (int i = 0; i < NUM_PARAMS; i++) {
        e[i] = (StWriteEntry){.name = PARAM_NAMES[i], .data = p.tensor[i], .dtype = (StDType)(i % 3)};
        e[i].ndim = param_shape(&c, i, e[i].shape);
    }
    e[NUM_PARAMS] = (StWriteEntry){.name = "x", .ndim = 3, .shape = {2, 1, 8}, .data = in.x};
    e[NUM_PARAMS + 1] = (StWriteEntry){.name = "dy", .ndim = 3, .shape = {2, 1, 8}, .data = in.dy, .dtype = ST_F16};
    char path[4096];
    snprintf(path, sizeof path, "%s/layer.safetensors", argv[1]);
    st_write(path, e, NUM_PARAMS + 2);
    snprintf(path, sizeof path, "%s/two.safetensors", argv[1]);
    st_write(path, e + NUM_PARAMS, 2);
    snprintf(path, sizeof path, "%s/one.safetensors", argv[1]);
    st_write(path, e + 3, 1);
    layer_params_free(&p);
    layer_inputs_free(&in);
    return 0;
}
