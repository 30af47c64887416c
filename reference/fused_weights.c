// The fused weight layout of step 06: the reference solution of the exercise "fused_weights".
#include <string.h>

#include "reference/parallel_reference.h"

void fuse_parallel_params(const LayerConfig *c, const LayerParams *p, FusedParallelParams *f) {
    const int64_t h = c->hidden, ffn = c->ffn, k_out = h + ffn;
    float *const *w = p->tensor;
    memcpy(f->ln_weight, w[P_LN1_WEIGHT], (size_t)h * sizeof(float));
    memcpy(f->ln_bias, w[P_LN1_BIAS], (size_t)h * sizeof(float));
    // W_in stacks the rows (output features): qkv's 3h, then fc1's ffn.
    memcpy(f->w_in, w[P_QKV_WEIGHT], (size_t)(3 * h * h) * sizeof(float));
    memcpy(f->w_in + 3 * h * h, w[P_FC1_WEIGHT], (size_t)(ffn * h) * sizeof(float));
    memcpy(f->b_in, w[P_QKV_BIAS], (size_t)(3 * h) * sizeof(float));
    memcpy(f->b_in + 3 * h, w[P_FC1_BIAS], (size_t)ffn * sizeof(float));
    // W_out puts the columns (input features) side by side: proj's h, then fc2's ffn.
    for (int64_t o = 0; o < h; o++) {
        memcpy(f->w_out + o * k_out, w[P_PROJ_WEIGHT] + o * h, (size_t)h * sizeof(float));
        memcpy(f->w_out + o * k_out + h, w[P_FC2_WEIGHT] + o * ffn, (size_t)ffn * sizeof(float));
        f->b_out[o] = w[P_PROJ_BIAS][o] + w[P_FC2_BIAS][o];
    }
}

void unfuse_parallel_params(const LayerConfig *c, const FusedParallelParams *f, LayerParams *p) {
    const int64_t h = c->hidden, ffn = c->ffn, k_out = h + ffn;
    float **w = p->tensor;
    memcpy(w[P_LN1_WEIGHT], f->ln_weight, (size_t)h * sizeof(float));
    memcpy(w[P_LN1_BIAS], f->ln_bias, (size_t)h * sizeof(float));
    memcpy(w[P_QKV_WEIGHT], f->w_in, (size_t)(3 * h * h) * sizeof(float));
    memcpy(w[P_FC1_WEIGHT], f->w_in + 3 * h * h, (size_t)(ffn * h) * sizeof(float));
    memcpy(w[P_QKV_BIAS], f->b_in, (size_t)(3 * h) * sizeof(float));
    memcpy(w[P_FC1_BIAS], f->b_in + 3 * h, (size_t)ffn * sizeof(float));
    for (int64_t o = 0; o < h; o++) {
        memcpy(w[P_PROJ_WEIGHT] + o * h, f->w_out + o * k_out, (size_t)h * sizeof(float));
        memcpy(w[P_FC2_WEIGHT] + o * ffn, f->w_out + o * k_out + h, (size_t)ffn * sizeof(float));
        w[P_PROJ_BIAS][o] = f->b_out[o];
        w[P_FC2_BIAS][o] = 0.0f;
    }
}
