// LayerNormMLP: y = FC2(GELU(FC1(LayerNorm(x)))) (+ residual) as one module.
//
// The fusions, all in cuBLASLt epilogues (each can be moved into a kernel of its own for an
// A/B timing: EPILOGUE_GELU, EPILOGUE_DGELU, EPILOGUE_BIAS, EPILOGUE_BGRAD in linear.h):
//   forward   FC1's GEMM adds the bias, applies GELU and keeps GELU's input (its "aux"
//             output) for backward: no separate bias and GELU kernels, no extra pass;
//             FC2's GEMM adds its bias and, optionally, the residual (beta = 1).
//   backward  the weight-gradient GEMMs sum the bias gradients (BGRADB); the LayerNorm
//             backward adds the residual's gradient in the same pass. GELU' runs where
//             `gelu_backward` says (GeluBackward below): by default in FC2's input-gradient
//             GEMM (the DGELU epilogue, reading the saved aux), with db1 still summed by
//             FC1's weight-gradient GEMM. Not DGELU_BGRAD, which sums db1 in the same
//             epilogue: on the H100 with cuBLAS 13.1 it made that GEMM 0.9 ms slower.
#ifndef MODULES_LAYERNORM_MLP_H
#define MODULES_LAYERNORM_MLP_H

#include "modules/layernorm.h"
#include "modules/linear.h"

#ifdef __cplusplus
extern "C" {
#endif

// Where the backward applies GELU' and sums db1 (the module test checks all three; time
// them with //modules:gemm_bench or by setting gelu_backward after init):
typedef enum {
    // A plain GEMM, then GELU' as one elementwise pass that reads FC2's input gradient and
    // the saved aux and writes d(fc1_pre) (0.28 ms at the quickstart's shape); FC1's
    // weight-gradient GEMM sums db1 (BGRADB).
    GELU_BACKWARD_SEPARATE_PASS,
    // FC2's input-gradient epilogue applies GELU' (DGELU, reading the aux), so d(fc1_pre) is
    // written once and the pass is gone; FC1's weight-gradient GEMM sums db1 (BGRADB). The
    // default: on the H100 the epilogue costs the GEMM about 0-0.2 ms, less than the pass,
    // and step 04 got 0.1-0.3 ms faster (docs/results.md).
    GELU_BACKWARD_IN_EPILOGUE,
    // DGELU_BGRAD: GELU' and db1 both in FC2's input-gradient epilogue (measured 1 ms slower
    // than the plain GEMM at the quickstart's shape, docs/results.md).
    GELU_BACKWARD_IN_EPILOGUE_WITH_BGRAD,
} GeluBackward;

// The two weight-gradient GEMMs (FC2's dW2/db2, FC1's dW1/db1) on a second stream (issue 21;
// TransformerLayer's overlap_wgrad, on in step 04 unless --no-overlap-wgrad). Nothing later in
// a training step reads their results, so while they run the default stream goes on with
// FC1's dgrad, LN2's backward and whatever its caller runs next (TransformerLayer: the
// projection's and attention's backward). Order, per backward:
//   default stream: [fc2_input_ready] FC2 dgrad (+GELU') [fc1_input_ready] FC1 dgrad, LN2 bwd ...
//   side stream:    wait fc2_input_ready, FC2 wgrad, wait fc1_input_ready, FC1 wgrad [done]
// and layernorm_mlp_wait_for_wgrads makes the default stream wait for `done`.
typedef struct {
    GemmStream side;  // non-blocking, normal priority, its own cuBLASLt workspace (gemm.h)
    cudaEvent_t fc2_input_ready;  // on the default stream: dy and gelu_out are there (backward's start)
    cudaEvent_t fc1_input_ready;  // on the default stream: d_fc1_pre is written (after FC2's dgrad, GELU')
    cudaEvent_t done;             // on the side stream: dW1, db1, dW2, db2 written
} MlpWgradStream;

typedef struct {
    LayerNorm ln;
    Linear fc1, fc2;
    GeluBackward gelu_backward;  // set by init: IN_EPILOGUE, or SEPARATE_PASS under EPILOGUE_DGELU=kernel
    MlpWgradStream *wgrad_stream;  // NULL (init's default): the wgrads on the default stream
    void *ln_out;     // [tokens, hidden]
    void *fc1_pre;    // [tokens, ffn] FC1's output before GELU (the epilogue's aux)
    void *gelu_out;   // [tokens, ffn]
    void *d_fc1_pre;  // [tokens, ffn]
    void *d_ln_out;   // [tokens, hidden]
} LayerNormMLP;

// The module's parameters (or their gradients) as host floats, with TE's names:
// layer_norm_weight, layer_norm_bias [hidden]; fc1_weight [ffn, hidden], fc1_bias [ffn];
// fc2_weight [hidden, ffn], fc2_bias [hidden].
typedef struct {
    float *layer_norm_weight, *layer_norm_bias, *fc1_weight, *fc1_bias, *fc2_weight, *fc2_bias;
} LayerNormMLPTensors;

void layernorm_mlp_init(LayerNormMLP *m, int hidden, int ffn, int64_t max_tokens, float eps,
                        const LayerNormMLPTensors *params, DType dtype);
void layernorm_mlp_free(LayerNormMLP *m);
// New parameter values (rounded to the module's dtype), e.g. after an optimizer step.
void layernorm_mlp_load_params(LayerNormMLP *m, const LayerNormMLPTensors *params);
// The layer's MLP block (ln2.*, mlp.linear1.*, mlp.linear2.*) of a whole layer's parameters or
// gradients, as this module's tensors (pointers into p, nothing copied).
LayerNormMLPTensors layernorm_mlp_of_layer(const LayerParams *p);
// The gradients of the last backward, into the host arrays `grads` points to.
void layernorm_mlp_read_grads(const LayerNormMLP *m, const LayerNormMLPTensors *grads);
// y = FC2(GELU(FC1(LN(x)))) + residual (residual may be NULL).
void layernorm_mlp_forward(LayerNormMLP *m, const void *x, void *y, int64_t tokens, const void *residual);
// dx = d/dx of the above applied to dy, + dresidual (may be NULL or alias dx).
// With the wgrad stream on, the weight and bias gradients of FC1 and FC2 may still be being
// computed on return, reading dy, gelu_out, ln_out and d_fc1_pre: the caller must keep dy
// unchanged and call layernorm_mlp_wait_for_wgrads before it reads those gradients or
// overwrites dy (forward and read_grads below wait by themselves).
void layernorm_mlp_backward(LayerNormMLP *m, const void *dy, const void *dresidual, void *dx,
                            int64_t tokens);

// Moves the two weight-gradient GEMMs to a side stream (on = 1; MlpWgradStream above) or back
// to the default stream (on = 0, after waiting for any still running). The stream, its
// events and workspace are created at the first `on` and freed by `on = 0` or
// layernorm_mlp_free. Same algorithms, same bits: only where they run changes.
void layernorm_mlp_set_wgrad_stream(LayerNormMLP *m, int on);
// The default stream waits (cudaStreamWaitEvent, the host does not) until the last backward's
// wgrads are done; nothing without the side stream. After it, everything the side stream read
// or wrote is ordered before whatever the default stream runs next.
void layernorm_mlp_wait_for_wgrads(const LayerNormMLP *m);

#ifdef __cplusplus
}
#endif

#endif  // MODULES_LAYERNORM_MLP_H
