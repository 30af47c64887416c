// Unfused attention, as eager PyTorch runs it: the [seq x seq] score matrix of every
// (batch, head) is materialised in device memory.
//
//   S = Q K^T / sqrt(d)     batched GEMM, written to memory
//   P = softmax(S)          a kernel reading and writing S-sized tensors
//   Pd = dropout(P)         another one
//   ctx = Pd V              batched GEMM
//
// q, k and v are read straight from the fused QKV projection's output, [seq, batch, heads,
// 3d] (each head's 3d values are [q | k | v]): for batch index n = b * heads + h, head n's q
// starts at element n * 3d and its rows (tokens) are batch * heads * 3d apart, which
// cuBLAS's strided-batched GEMM takes as a leading dimension - no transposing copies.
// Steps 01, 02 and 03 share this module; step 04 replaces it with flash attention.
#ifndef KERNELS_NAIVE_NAIVE_ATTENTION_H
#define KERNELS_NAIVE_NAIVE_ATTENTION_H

#include <stdint.h>

#include "common/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int seq, batch, heads, head_dim;
    DType dtype;
    float p_drop;
    int causal;
    uint64_t seed;
    void *probs;    // [batch*heads, seq, seq] softmax output before dropout (saved for backward)
    void *dropped;  // [batch*heads, seq, seq] after dropout (the A operand of P@V)
    void *dscores;  // [batch*heads, seq, seq] scratch for backward
} NaiveAttention;

void naive_attention_init(NaiveAttention *a, const LayerConfig *cfg);  // dev_alloc's the buffers
// qkv [seq, batch, heads, 3d] -> ctx [seq, batch, heads, d]
void naive_attention_forward(NaiveAttention *a, const void *qkv, void *ctx, uint64_t dropout_offset);
// dctx -> dqkv (all of it: q, k and v slots), using what forward saved.
void naive_attention_backward(NaiveAttention *a, const void *qkv, const void *dctx, void *dqkv,
                              uint64_t dropout_offset);
void naive_attention_free(NaiveAttention *a);

#ifdef __cplusplus
}
#endif

#endif  // KERNELS_NAIVE_NAIVE_ATTENTION_H
