// Unfused attention on the fused QKV layout, as eager PyTorch computes it: the whole
// [seq, seq] score matrix of every (batch, head) is materialised in device memory.
//
//   S = Q K^T / sqrt(d)         one batched cuBLAS product (the scale folded into alpha)
//   P = softmax(S)              (causal: keys after the query masked)      -> probs
//   D = dropout(P)              Philox mask, attention's numbering         -> dropped
//   ctx = D V                   one batched cuBLAS product
//
// qkv is [seq, batch, heads, 3 * head_dim] with each head's values [q | k | v]; ctx is
// [seq, batch, heads, head_dim]. The batched products read Q, K, V straight out of qkv
// with strides (no transposing copies): for batch entry n = b * heads + h, q starts at
// n * 3d and consecutive tokens are batch * heads * 3d apart.
//
// Steps 01, 02 and 03 share this module. Memory: three [batch * heads, seq, seq] buffers;
// at the quickstart size (4 * 32 * 2048 * 2048 fp16) 1 GiB each - the reason step 04
// writes flash attention.
#ifndef KERNELS_NAIVE_NAIVE_ATTENTION_H
#define KERNELS_NAIVE_NAIVE_ATTENTION_H

#include <stdint.h>

#include "common/core/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int seq, batch, heads, head_dim; DType dtype; float p_drop; int causal; uint64_t seed;
    void *probs;    // [batch*heads, seq, seq] softmax output before dropout (saved for backward)
    void *dropped;  // [batch*heads, seq, seq] after dropout (the A operand of P@V)
    void *dscores;  // [batch*heads, seq, seq] scratch for backward
} NaiveAttention;

void naive_attention_init(NaiveAttention *a, const LayerConfig *cfg);  // dev_alloc's the buffers
// ctx = attention(qkv); dropout_offset selects the mask (dropout_offset(step, DROPOUT_SITE_ATTENTION)).
void naive_attention_forward(NaiveAttention *a, const void *qkv, void *ctx, uint64_t dropout_offset);
// dqkv = gradient of ctx's loss with respect to qkv, all of it overwritten. Needs the
// probs and dropped of the forward with the same qkv and dropout_offset.
void naive_attention_backward(NaiveAttention *a, const void *qkv, const void *dctx, void *dqkv, uint64_t dropout_offset);
void naive_attention_free(NaiveAttention *a);

#ifdef __cplusplus
}
#endif

#endif  // KERNELS_NAIVE_NAIVE_ATTENTION_H
