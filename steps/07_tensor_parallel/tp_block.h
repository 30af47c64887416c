// Step 07's own block on one tensor-parallel rank: a column-parallel Linear, a LayerNorm
// over the features it has split across the ranks, a row-parallel Linear:
//
//   out = LN(x W1^T + b1) W2^T + b2      x, out [T, h]; LN over the f features
//
// The LayerNorm's input is split by features: each rank holds f/tp of every token's f.
//   TP_LN_SHARD_LOCAL   step 02's LayerNorm on the rank's f/tp features with its slice of
//                       gamma, beta: no communication, but a GroupNorm with tp groups - not
//                       the unsharded function (the chapter shows by how much)
//   TP_LN_EXACT         the split LayerNorm (split_layernorm.h): per token, the slices'
//                       (sum, sum of squares) all-reduced in fp32 (2 floats per token), then
//                       normalised with the full-width statistics; backward likewise
// FC2's partial output and FC1's partial input gradient are all-reduced. Parameters:
// reference/tp_reference.h's TpBlock (unsharded; each rank takes its slice). CPU twin:
// tp_block_sim.
#ifndef STEPS_07_TENSOR_PARALLEL_TP_BLOCK_H
#define STEPS_07_TENSOR_PARALLEL_TP_BLOCK_H

#include <stdint.h>

#include "common/core/layer.h"
#include "modules/layernorm.h"
#include "modules/linear.h"
#include "reference/tp_reference.h"
#include "steps/07_tensor_parallel/layer_comm.h"

typedef struct {
    int h, fl, f, rank;
    int64_t T;
    DType dtype;
    TpLnMode mode;
    float eps;
    Linear fc1;                           // rows of W1, b1: [fl, h]
    LayerNorm ln;                         // shard-local: a LayerNorm over the rank's fl features
    void *gamma, *beta, *dgamma, *dbeta;  // exact: the rank's slice of gamma, beta [fl]
    float *mean, *rstd, *sums;            // exact: [T], [T], [T, 2] (all-reduced)
    Linear fc2;                           // columns of W2: [h, fl], no bias
    void *b2, *db2;                       // [h], replicated
    void *db_workspace;                   // bias_grad_columns' partial sums (bias_epilogue.h)
    void *z, *n, *out, *dn, *dz, *dx;     // [T, fl] x2, [T, h], [T, fl] x2, [T, h]
} TpBlockGpu;

void tp_block_gpu_init(TpBlockGpu *b, const TpBlock *p, int64_t tokens, int tp, int rank, TpLnMode mode, float eps,
                       DType dtype);
void tp_block_gpu_free(TpBlockGpu *b);
void tp_block_gpu_forward(TpBlockGpu *b, LayerComm *lc, const void *x);      // x [T, h] -> b->out
void tp_block_gpu_backward(TpBlockGpu *b, LayerComm *lc, const void *dout);  // -> b->dx and the gradients
// The rank's gradients into host arrays in shard shapes: w1 [fl, h], b1, gamma, beta [fl],
// w2 [h, fl], b2 [h].
void tp_block_gpu_read_grads(const TpBlockGpu *b, TpBlock *shard_grads);

#endif  // STEPS_07_TENSOR_PARALLEL_TP_BLOCK_H
