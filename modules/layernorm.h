// LayerNorm as a module: gamma, beta, their gradients, and the per-row statistics its
// forward saves for backward. The kernels are kernels/layernorm (fast, vectorised).
#ifndef MODULES_LAYERNORM_H
#define MODULES_LAYERNORM_H

#include <stdint.h>

#include "common/fp8/fp8_format.h"
#include "common/core/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int cols;
    int64_t max_rows;
    float eps;
    DType dtype;
    void *gamma, *beta, *dgamma, *dbeta;
    float *mean, *rstd;   // [max_rows], saved by forward
    void *workspace;      // backward's partial sums
    const void *saved_x;  // the input of the last forward
} LayerNorm;

// NULL if the module takes rows of `cols` values (the fast kernels' limit,
// LAYERNORM_FAST_MAX_COLS), else why not: for a step's `unsupported`, so that a configuration
// is refused when it is read. layernorm_init refuses the same (fail_user).
const char *layernorm_unsupported(int cols);
void layernorm_init(LayerNorm *ln, int cols, int64_t max_rows, float eps, const float *gamma,
                    const float *beta, DType dtype);
void layernorm_free(LayerNorm *ln);
void layernorm_forward(LayerNorm *ln, const void *x, void *y, int64_t rows);
// The same with the output in FP8: codes of y * (*scale) into y8, max |y| folded into *amax
// (step 05 hands it an FP8 Linear's input, fp8_linear_input()).
void layernorm_forward_fp8(LayerNorm *ln, const void *x, uint8_t *y8, const float *scale, float *amax,
                           Fp8Format format, int64_t rows);
// dx = LayerNorm'(dy) + dresidual (dresidual may be NULL; it may alias dx).
void layernorm_backward(LayerNorm *ln, const void *dy, const void *dresidual, void *dx, int64_t rows);
void layernorm_read_grads(const LayerNorm *ln, float *dgamma, float *dbeta);
// New values for gamma and beta (host floats).
void layernorm_load_params(LayerNorm *ln, const float *gamma, const float *beta);

#ifdef __cplusplus
}
#endif

#endif  // MODULES_LAYERNORM_H
