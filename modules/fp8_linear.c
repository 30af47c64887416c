#include "modules/fp8_linear.h"

#include <math.h>
#include <stdlib.h>

#include "common/core/errors.h"
#include "common/core/gpu_arch.h"
#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu.h"
#include "common/gpu/gpu_phase.h"
#include "modules/fp8_gemm.h"
#include "kernels/fp8/fp8_cast.h"

float *fp8_meta_new(int history_len) {
    int n = FP8_META_HISTORY + history_len;
    float *host = xcalloc((size_t)n, sizeof(float));
    host[FP8_META_SCALE] = host[FP8_META_SCALE_INV] = 1.0f;  // the first step casts unscaled
    float *dev = dev_upload_f32(host, n);
    free(host);
    return dev;
}

void fp8_linear_init(Fp8Linear *l, int in, int out, int64_t max_tokens, const float *weight, const float *bias,
                     DType dtype, const DelayedScaling *recipe) {
    gpu_require_cc("an FP8 Linear (cuBLASLt's FP8 GEMMs)", GPU_ARCH_MIN_FP8);
    linear_init(&l->base, in, out, weight, bias, dtype);
    l->recipe = *recipe;
    l->fwd_format = FP8_E4M3;
    l->bwd_format = recipe->format == FP8_RECIPE_HYBRID ? FP8_E5M2 : FP8_E4M3;
    l->meta_x = fp8_meta_new(recipe->history_len);
    l->meta_w = fp8_meta_new(recipe->history_len);
    l->meta_dy = fp8_meta_new(recipe->history_len);
    l->x8 = dev_alloc((size_t)max_tokens * in), l->xt8 = dev_alloc((size_t)max_tokens * in);
    l->w8 = dev_alloc((size_t)in * out), l->wt8 = dev_alloc((size_t)in * out);
    l->dy8 = dev_alloc((size_t)max_tokens * out), l->dyt8 = dev_alloc((size_t)max_tokens * out);
    l->dbias_workspace = dev_alloc(fp8_cast_transpose_dbias_workspace_bytes(max_tokens, out));
}

void fp8_linear_free(Fp8Linear *l) {
    linear_free(&l->base);
    void *bufs[] = {l->meta_x, l->meta_w, l->meta_dy, l->x8, l->xt8, l->w8, l->wt8, l->dy8, l->dyt8, l->dbias_workspace};
    dev_free_all(bufs, COUNT_OF(bufs));
}

// y = x8 W8^T (+ b), once x8 and xt8 hold this step's input: the weight's casts and the GEMM.
static void forward_from_fp8_input(Fp8Linear *l, void *y, int64_t tokens, int add_bias) {
    const int in = l->base.in, out = l->base.out;
    fp8_cast_transpose(l->base.weight, l->w8, l->wt8, out, in, l->meta_w + FP8_META_SCALE,
                       l->meta_w + FP8_META_HISTORY, l->fwd_format, l->base.dtype);
    // D [out x T] = W8 (stored [in x out]) ^T  x8 (stored [in x T])
    Fp8Gemm g = {.m = out, .n = tokens, .k = in, .a = l->w8, .a_format = l->fwd_format,
                 .a_scale_inv = l->meta_w + FP8_META_SCALE_INV, .b = l->x8, .b_format = l->fwd_format,
                 .b_scale_inv = l->meta_x + FP8_META_SCALE_INV, .d = y, .ldd = out, .out_dtype = l->base.dtype,
                 .bias = add_bias ? l->base.bias : NULL, .fast_accum = 1};
    GPU_PHASE(CAT_GEMM_FPROP, fp8_gemm_run(&g));
}

void fp8_linear_forward(Fp8Linear *l, const void *x, void *y, int64_t tokens, int add_bias) {
    fp8_cast_transpose(x, l->x8, l->xt8, tokens, l->base.in, l->meta_x + FP8_META_SCALE,
                       l->meta_x + FP8_META_HISTORY, l->fwd_format, l->base.dtype);
    forward_from_fp8_input(l, y, tokens, add_bias);
}

const void *fp8_linear_forward_return_bias(Fp8Linear *l, const void *x, void *y, int64_t tokens) {
    fp8_linear_forward(l, x, y, tokens, 0);
    return l->base.bias;
}

Fp8Input fp8_linear_input(Fp8Linear *l) {
    Fp8Input in = {l->x8, l->meta_x + FP8_META_SCALE, l->meta_x + FP8_META_HISTORY, l->fwd_format};
    return in;
}

void fp8_linear_forward_fp8_input(Fp8Linear *l, void *y, int64_t tokens, int add_bias) {
    fp8_transpose(l->x8, l->xt8, tokens, l->base.in);
    forward_from_fp8_input(l, y, tokens, add_bias);
}

void fp8_linear_forward_gelu(Fp8Linear *l, const void *pre_activation, void *y, int64_t tokens, int add_bias) {
    fp8_gelu_cast_transpose(pre_activation, l->x8, l->xt8, tokens, l->base.in, l->meta_x + FP8_META_SCALE,
                            l->meta_x + FP8_META_HISTORY, l->fwd_format, l->base.dtype);
    forward_from_fp8_input(l, y, tokens, add_bias);
}

// The two GEMMs of backward, from dy's FP8 copies: dx and dW.
static void backward_from_fp8_dy(Fp8Linear *l, void *dx, int64_t tokens) {
    const int in = l->base.in, out = l->base.out;
    // dx: D [in x T] = Wt8 (W^T row-major [in, out], stored [out x in])^T  dy8 (stored [out x T])
    Fp8Gemm dgrad = {.m = in, .n = tokens, .k = out, .a = l->wt8, .a_format = l->fwd_format,
                     .a_scale_inv = l->meta_w + FP8_META_SCALE_INV, .b = l->dy8, .b_format = l->bwd_format,
                     .b_scale_inv = l->meta_dy + FP8_META_SCALE_INV, .d = dx, .ldd = in,
                     .out_dtype = l->base.dtype, .fast_accum = 0};
    GPU_PHASE(CAT_GEMM_DGRAD, fp8_gemm_run(&dgrad));
    // dW: D [in x out] = xt8 (stored [T x in])^T  dyt8 (stored [T x out])
    Fp8Gemm wgrad = {.m = in, .n = out, .k = tokens, .a = l->xt8, .a_format = l->fwd_format,
                     .a_scale_inv = l->meta_x + FP8_META_SCALE_INV, .b = l->dyt8, .b_format = l->bwd_format,
                     .b_scale_inv = l->meta_dy + FP8_META_SCALE_INV, .d = l->base.dweight, .ldd = in,
                     .out_dtype = l->base.dtype, .fast_accum = 0};
    GPU_PHASE(CAT_GEMM_WGRAD, fp8_gemm_run(&wgrad));
}

void fp8_linear_backward(Fp8Linear *l, const void *dy, void *dx, int64_t tokens) {
    const int out = l->base.out;
    // dy is read once: its FP8 copies, its transposed FP8 copy and the bias gradient together.
    if (l->base.bias)
        fp8_cast_transpose_dbias(dy, l->dy8, l->dyt8, tokens, out, l->meta_dy + FP8_META_SCALE,
                                 l->meta_dy + FP8_META_HISTORY, l->bwd_format, l->base.dtype, l->base.dbias,
                                 l->dbias_workspace);
    else
        fp8_cast_transpose(dy, l->dy8, l->dyt8, tokens, out, l->meta_dy + FP8_META_SCALE,
                           l->meta_dy + FP8_META_HISTORY, l->bwd_format, l->base.dtype);
    backward_from_fp8_dy(l, dx, tokens);
}

void fp8_linear_backward_dgelu(Fp8Linear *l, const void *d_gelu_out, const void *pre_activation, void *dx,
                               int64_t tokens) {
    if (!l->base.bias) DIE("fp8_linear_backward_dgelu: the Linear has no bias (its gradient is summed here)");
    fp8_dgelu_cast_transpose_dbias(d_gelu_out, pre_activation, l->dy8, l->dyt8, tokens, l->base.out,
                                   l->meta_dy + FP8_META_SCALE, l->meta_dy + FP8_META_HISTORY, l->bwd_format,
                                   l->base.dtype, l->base.dbias, l->dbias_workspace);
    backward_from_fp8_dy(l, dx, tokens);
}

void fp8_linear_load_params(Fp8Linear *l, const float *weight, const float *bias) {
    linear_load_params(&l->base, weight, bias);
}

void fp8_linear_read_grads(const Fp8Linear *l, float *dweight, float *dbias) {
    linear_read_grads(&l->base, dweight, dbias);
}

void fp8_linear_update_scales(Fp8Linear *l) {
    int most_recent = l->recipe.amax_algo == AMAX_ALGO_MOST_RECENT;
    fp8_update_scale_device(l->meta_x, l->recipe.history_len, fp8_max(l->fwd_format), l->recipe.margin, most_recent);
    fp8_update_scale_device(l->meta_w, l->recipe.history_len, fp8_max(l->fwd_format), l->recipe.margin, most_recent);
    fp8_update_scale_device(l->meta_dy, l->recipe.history_len, fp8_max(l->bwd_format), l->recipe.margin, most_recent);
}

void fp8_linear_read_scaling(const Fp8Linear *l, float scale[3], float amax[3]) {
    const float *metas[3] = {l->meta_x, l->meta_w, l->meta_dy};
    for (int i = 0; i < 3; i++) {
        float m[FP8_META_HISTORY + 2];
        dev_download_f32(m, metas[i], FP8_META_HISTORY + 2);
        scale[i] = m[FP8_META_SCALE];
        amax[i] = m[FP8_META_HISTORY];  // this step's (read before the update rolls the history)
    }
}
