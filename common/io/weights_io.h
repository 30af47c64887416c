// Reading and writing the layer's tensors as safetensors files, with PyTorch's names.
//
//   --weights FILE   the 12 parameters (ln1.weight, qkv_projection.weight, ...)
//   --input FILE     x and dy, each [seq, batch, hidden]
//   --save FILE      out, dx and grad.<name> for every parameter (float32)
//
// Files may store f32, f16 or bf16; values are converted to float. Every problem (a missing
// file or tensor, a wrong shape or dtype, a truncated file, a bad header) is reported with
// a clear message naming the file and tensor, and the program exits with status 1. So is a
// value that the layer's dtype cannot hold (at fp16, |x| >= 65520, which would round to an
// infinity; NaN or inf anywhere): the message names the tensor, the value, its index and the
// dtype's range.
#ifndef COMMON_IO_WEIGHTS_IO_H
#define COMMON_IO_WEIGHTS_IO_H

#include "common/core/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

void load_layer_params(const char *path, const LayerConfig *cfg, LayerParams *params);
void load_layer_inputs(const char *path, const LayerConfig *cfg, LayerInputs *inputs);
void save_layer_params(const char *path, const LayerConfig *cfg, const LayerParams *params);
void save_layer_results(const char *path, const LayerConfig *cfg, const LayerResults *results);

#ifdef __cplusplus
}
#endif

#endif  // COMMON_IO_WEIGHTS_IO_H
