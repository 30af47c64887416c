// EXERCISE "fused_weights" (CPU, chapter 06; graded by tests/exercises/fused_weights_test.c:
// tools/grade.sh fused_weights).
//
// Step 06's parallel layer feeds attention and the MLP the same LayerNorm output, so their two
// input projections can be ONE GEMM, and their two output projections another
// (steps/06_parallel_layers/README.md, "Why it can be faster: fused weights"). For that the
// weights are stored fused (FusedParallelParams, reference/parallel_reference.h):
//
//   W_in  = [W_qkv ; W_fc1]    [3h + ffn, h]   b_in  = [b_qkv ; b_fc1]   [3h + ffn]
//   W_out = [W_proj | W_fc2]   [h, h + ffn]    b_out = b_proj + b_fc2    [h]
//   ln_weight, ln_bias = LN1's (the parallel layer has one LayerNorm)    [h]
//
// Every weight is row-major [out_features, in_features], PyTorch's Linear layout; float32.
// ";" stacks matrices on top of each other (more output features), "|" puts them side by side
// (more input features: z = [ctx | gelu] W_out^T = ctx W_proj^T + gelu W_fc2^T, both branches
// summed by one GEMM - which is also why their biases add up).
//
// Write both directions:
//   fuse_parallel_params:   every element of f (the test fills f with NaN first).
//   unfuse_parallel_params: ln1, qkv, proj, fc1 and fc2's weights and biases in p (LN2's are not
//                           used by the parallel layer: leave them). b_out cannot be split back:
//                           give all of it to b_proj and set b_fc2 to zero.
// Shapes: param_shape() in common/core/layer.h; h = c->hidden, ffn = c->ffn.
#include <string.h>

#include "reference/parallel_reference.h"

void fuse_parallel_params(const LayerConfig *c, const LayerParams *p, FusedParallelParams *f) {
    (void)c, (void)p, (void)f;
    // TODO: your code here.
}

void unfuse_parallel_params(const LayerConfig *c, const FusedParallelParams *f, LayerParams *p) {
    (void)c, (void)f, (void)p;
    // TODO: your code here.
}
