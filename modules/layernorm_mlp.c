#include "modules/layernorm_mlp.h"

#include <stdlib.h>

#include "common/core/errors.h"
#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu.h"
#include "kernels/fused/elementwise.h"

void layernorm_mlp_init(LayerNormMLP *m, int hidden, int ffn, int64_t max_tokens, float eps,
                        const LayerNormMLPTensors *p, DType dtype) {
    // EPILOGUE_DGELU=kernel (linear.h) moves GELU' out of FC2's dgrad into its own pass.
    m->gelu_backward = linear_epilogue_place(EPILOGUE_KIND_DGELU) == EPILOGUE_IN_KERNEL ? GELU_BACKWARD_SEPARATE_PASS
                                                                                       : GELU_BACKWARD_IN_EPILOGUE;
    layernorm_init(&m->ln, hidden, max_tokens, eps, p->layer_norm_weight, p->layer_norm_bias, dtype);
    linear_init(&m->fc1, hidden, ffn, p->fc1_weight, p->fc1_bias, dtype);
    linear_init(&m->fc2, ffn, hidden, p->fc2_weight, p->fc2_bias, dtype);
    size_t e = dtype_bytes(dtype);
    m->ln_out = dev_alloc((size_t)max_tokens * hidden * e);
    m->d_ln_out = dev_alloc((size_t)max_tokens * hidden * e);
    m->fc1_pre = dev_alloc((size_t)max_tokens * ffn * e);
    m->gelu_out = dev_alloc((size_t)max_tokens * ffn * e);
    m->d_fc1_pre = dev_alloc((size_t)max_tokens * ffn * e);
    m->wgrad_stream = NULL;
}

void layernorm_mlp_set_wgrad_stream(LayerNormMLP *m, int on) {
    if (on && !m->wgrad_stream) {
        MlpWgradStream *w = xcalloc(1, sizeof *w);
        // Normal priority, the default stream's: the wgrads should fill what the default
        // stream's kernels leave idle, not push them aside (step 07's collectives run at high
        // priority because the compute waits for them; here nothing waits for the wgrads
        // until the step's end). gemm_stream_init(.., 1) is the other try.
        gemm_stream_init(&w->side, 0);
        cudaEvent_t *events[] = {&w->fc2_input_ready, &w->fc1_input_ready, &w->done};
        for (size_t i = 0; i < COUNT_OF(events); i++)
            CUDA_CHECK(cudaEventCreateWithFlags(events[i], cudaEventDisableTiming));
        m->wgrad_stream = w;
    } else if (!on && m->wgrad_stream) {
        MlpWgradStream *w = m->wgrad_stream;
        layernorm_mlp_wait_for_wgrads(m);
        gemm_stream_free(&w->side);  // waits for the side stream first
        cudaEventDestroy(w->fc2_input_ready), cudaEventDestroy(w->fc1_input_ready), cudaEventDestroy(w->done);
        free(w);
        m->wgrad_stream = NULL;
    }
}

void layernorm_mlp_wait_for_wgrads(const LayerNormMLP *m) {
    if (m->wgrad_stream) CUDA_CHECK(cudaStreamWaitEvent(0, m->wgrad_stream->done, 0));
}

void layernorm_mlp_free(LayerNormMLP *m) {
    layernorm_mlp_set_wgrad_stream(m, 0);
    layernorm_free(&m->ln);
    linear_free(&m->fc1);
    linear_free(&m->fc2);
    void *bufs[] = {m->ln_out, m->d_ln_out, m->fc1_pre, m->gelu_out, m->d_fc1_pre};
    dev_free_all(bufs, COUNT_OF(bufs));
}

void layernorm_mlp_load_params(LayerNormMLP *m, const LayerNormMLPTensors *p) {
    layernorm_load_params(&m->ln, p->layer_norm_weight, p->layer_norm_bias);
    linear_load_params(&m->fc1, p->fc1_weight, p->fc1_bias);
    linear_load_params(&m->fc2, p->fc2_weight, p->fc2_bias);
}

void layernorm_mlp_read_grads(const LayerNormMLP *m, const LayerNormMLPTensors *g) {
    layernorm_mlp_wait_for_wgrads(m);  // the copies below run on the default stream
    layernorm_read_grads(&m->ln, g->layer_norm_weight, g->layer_norm_bias);
    linear_read_grads(&m->fc1, g->fc1_weight, g->fc1_bias);
    linear_read_grads(&m->fc2, g->fc2_weight, g->fc2_bias);
}

void layernorm_mlp_forward(LayerNormMLP *m, const void *x, void *y, int64_t tokens, const void *residual) {
    // It overwrites ln_out and gelu_out, which the last backward's wgrads read.
    layernorm_mlp_wait_for_wgrads(m);
    layernorm_forward(&m->ln, x, m->ln_out, tokens);
    // FC1 + bias + GELU in one GEMM; the pre-activation goes to fc1_pre for backward.
    linear_forward_gelu(&m->fc1, m->ln_out, m->gelu_out, m->fc1_pre, tokens);
    // FC2 + bias (+ residual).
    linear_forward(&m->fc2, m->gelu_out, y, tokens, residual);
}

// With the wgrad stream (layernorm_mlp.h): the side stream waits for `ready`, recorded now on
// the default stream. Returns where the wgrad runs (NULL: the default stream).
static const GemmStream *wgrad_after(MlpWgradStream *w, cudaEvent_t ready) {
    if (!w) return NULL;
    CUDA_CHECK(cudaEventRecord(ready, 0));
    CUDA_CHECK(cudaStreamWaitEvent(w->side.stream, ready, 0));
    return &w->side;
}

void layernorm_mlp_backward(LayerNormMLP *m, const void *dy, const void *dresidual, void *dx,
                            int64_t tokens) {
    MlpWgradStream *w = m->wgrad_stream;
    // FC2: dW2 and db2 (BGRADB), then d(fc1_pre) = (dy W2) * GELU'(fc1_pre).
    // On the side stream, FC2's wgrad reads dy and gelu_out while the default stream runs the
    // dgrad below. Safe: nothing on the default stream writes either until the caller's wait
    // (layernorm_mlp_wait_for_wgrads): dy is the caller's, kept until then (this backward and
    // TransformerLayer's only read it, e.g. as dresidual), and gelu_out is written only by the
    // next forward, which waits first.
    linear_wgrad_on(&m->fc2, dy, tokens, 1, wgrad_after(w, w ? w->fc2_input_ready : NULL));
    const int ffn = m->fc1.out;
    switch (m->gelu_backward) {
        case GELU_BACKWARD_SEPARATE_PASS:
            linear_dgrad(&m->fc2, dy, m->d_fc1_pre, tokens);
            // (16-byte accesses: step 01's one-element-per-thread gelu_backward took 0.47 ms here.)
            gelu_backward_strided(m->d_fc1_pre, ffn, m->fc1_pre, ffn, m->d_fc1_pre, ffn, tokens, ffn, m->fc1.dtype);
            break;
        case GELU_BACKWARD_IN_EPILOGUE:
            linear_dgrad_epilogue(&m->fc2, dy, m->d_fc1_pre, tokens, GEMM_EPILOGUE_DGELU, NULL, m->fc1_pre);
            break;
        case GELU_BACKWARD_IN_EPILOGUE_WITH_BGRAD:  // db1 too: FC1's bias gradient, summed by FC2's dgrad
            linear_dgrad_epilogue(&m->fc2, dy, m->d_fc1_pre, tokens, GEMM_EPILOGUE_DGELU_BGRAD, m->fc1.dbias,
                                  m->fc1_pre);
            break;
    }
    // FC1: d(ln_out) and dW1 (+ db1 unless the epilogue above summed it).
    // On the side stream, FC1's wgrad reads d_fc1_pre (complete: the event follows FC2's dgrad
    // and the GELU' pass, its last writers) and ln_out. Safe: after the event the default
    // stream only reads d_fc1_pre (FC1's dgrad) and never writes ln_out; both are written again
    // only by the next backward / forward, which come after the caller's wait (the forward
    // waits itself). db1 under DGELU_BGRAD was written by FC2's dgrad on the default stream,
    // and FC1's wgrad then leaves it alone (bias_grad 0).
    const GemmStream *fc1_wgrad_where = wgrad_after(w, w ? w->fc1_input_ready : NULL);
    linear_dgrad(&m->fc1, m->d_fc1_pre, m->d_ln_out, tokens);
    linear_wgrad_on(&m->fc1, m->d_fc1_pre, tokens, m->gelu_backward != GELU_BACKWARD_IN_EPILOGUE_WITH_BGRAD,
                    fc1_wgrad_where);
    if (w) CUDA_CHECK(cudaEventRecord(w->done, w->side.stream));
    layernorm_backward(&m->ln, m->d_ln_out, dresidual, dx, tokens);
}

LayerNormMLPTensors layernorm_mlp_of_layer(const LayerParams *p) {
    float *const *w = p->tensor;
    return (LayerNormMLPTensors){w[P_LN2_WEIGHT], w[P_LN2_BIAS], w[P_FC1_WEIGHT],
                                 w[P_FC1_BIAS],   w[P_FC2_WEIGHT], w[P_FC2_BIAS]};
}
