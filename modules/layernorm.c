#include "modules/layernorm.h"

#include "common/core/errors.h"
#include "common/gpu/gpu.h"
#include "kernels/layernorm/fast_layernorm.h"

const char *layernorm_unsupported(int cols) { return layernorm_fast_unsupported(cols); }

void layernorm_init(LayerNorm *ln, int cols, int64_t max_rows, float eps, const float *gamma,
                    const float *beta, DType dtype) {
    const char *why = layernorm_fast_unsupported(cols);  // the kernels' width, any GPU
    if (!why) why = layernorm_fast_backward_unsupported(cols, dtype);  // this GPU's shared memory
    if (why) fail_user("%s", why);
    ln->cols = cols;
    ln->max_rows = max_rows;
    ln->eps = eps;
    ln->dtype = dtype;
    ln->gamma = dev_upload(gamma, cols, dtype);
    ln->beta = dev_upload(beta, cols, dtype);
    ln->dgamma = dev_alloc((size_t)cols * dtype_bytes(dtype));
    ln->dbeta = dev_alloc((size_t)cols * dtype_bytes(dtype));
    ln->mean = dev_alloc((size_t)max_rows * sizeof(float));
    ln->rstd = dev_alloc((size_t)max_rows * sizeof(float));
    ln->workspace = dev_alloc(layernorm_fast_backward_workspace_bytes(cols));
    ln->saved_x = NULL;
}

void layernorm_free(LayerNorm *ln) {
    void *bufs[] = {ln->gamma, ln->beta, ln->dgamma, ln->dbeta, ln->mean, ln->rstd, ln->workspace};
    dev_free_all(bufs, COUNT_OF(bufs));
}

void layernorm_forward(LayerNorm *ln, const void *x, void *y, int64_t rows) {
    if (rows > ln->max_rows) DIE("layernorm_forward: %lld rows, module sized for %lld", (long long)rows, (long long)ln->max_rows);
    ln->saved_x = x;
    layernorm_fast_forward(x, ln->gamma, ln->beta, y, ln->mean, ln->rstd, rows, ln->cols, ln->eps, ln->dtype);
}

void layernorm_forward_fp8(LayerNorm *ln, const void *x, uint8_t *y8, const float *scale, float *amax,
                           Fp8Format format, int64_t rows) {
    if (rows > ln->max_rows) DIE("layernorm_forward_fp8: %lld rows, module sized for %lld", (long long)rows, (long long)ln->max_rows);
    ln->saved_x = x;
    layernorm_fast_forward_fp8(x, ln->gamma, ln->beta, y8, scale, amax, format, ln->mean, ln->rstd, rows, ln->cols,
                               ln->eps, ln->dtype);
}

void layernorm_backward(LayerNorm *ln, const void *dy, const void *dresidual, void *dx, int64_t rows) {
    if (!ln->saved_x) DIE("layernorm_backward before layernorm_forward");
    layernorm_fast_backward(dy, ln->saved_x, ln->gamma, ln->mean, ln->rstd, dresidual, dx, ln->dgamma,
                            ln->dbeta, ln->workspace, rows, ln->cols, ln->dtype);
}

void layernorm_load_params(LayerNorm *ln, const float *gamma, const float *beta) {
    dev_upload_to(ln->gamma, gamma, ln->cols, ln->dtype);
    dev_upload_to(ln->beta, beta, ln->cols, ln->dtype);
}

void layernorm_read_grads(const LayerNorm *ln, float *dgamma, float *dbeta) {
    dev_download(dgamma, ln->dgamma, ln->cols, ln->dtype);
    dev_download(dbeta, ln->dbeta, ln->cols, ln->dtype);
}
