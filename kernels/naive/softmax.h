// Softmax over the rows of the attention scores, in fp32.
//
// scores and probs are [batch * heads * seq, seq] in `dtype`: one row per (batch, head,
// query i), one column per key j. Forward computes probs = softmax(scale * scores) along
// each row; with `causal`, keys j > i are masked out (probability exactly 0).
#ifndef KERNELS_NAIVE_SOFTMAX_H
#define KERNELS_NAIVE_SOFTMAX_H

#include <stdint.h>

#include "common/core/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

// rows: batch * heads * seq (query i of a row is row % seq). probs may alias scores.
void softmax_forward(const void *scores, int64_t rows, int seq, float scale, int causal,
                     void *probs, DType dtype);

// dscores = probs * (dprobs - sum_j dprobs_j probs_j) per row: the gradient with respect to
// the softmax's input (multiply by `scale` afterwards if the forward scaled). Masked entries
// have probs 0 and so get gradient 0: no causal flag needed. dscores may alias dprobs.
void softmax_backward(const void *dprobs, const void *probs, int64_t rows, int seq, void *dscores,
                      DType dtype);

#ifdef __cplusplus
}
#endif

#endif  // KERNELS_NAIVE_SOFTMAX_H
