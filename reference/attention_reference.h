// Attention the flash way, on the CPU: keys stream past in blocks and each query row keeps
// only a running maximum, a running sum and a running output. This is the algorithm of
// step 04's fused kernel (kernels/attention), in plain C, so that it can be read, tested
// and written as an exercise without a GPU.
//
// Why it works: softmax(s)_j = exp(s_j - m) / sum_k exp(s_k - m) for ANY m. Keep m = the
// largest score seen so far; when a new block raises it to m', rescale what was summed so
// far by exp(m - m'), and carry on. At the end, divide by the sum. No row of scores is
// ever stored whole.
#ifndef REFERENCE_ATTENTION_REFERENCE_H
#define REFERENCE_ATTENTION_REFERENCE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// The running state of one query row.
typedef struct {
    double max;   // largest score seen so far (-inf before the first block)
    double sum;   // sum of exp(score - max) over the keys seen so far (dropped ones included)
    double *acc;  // [d]: sum of keep * exp(score - max) / (1 - p) * v over the keys seen so far
    int d;
} OnlineSoftmax;

void online_softmax_init(OnlineSoftmax *st, double *acc, int d);

// Folds one block of n keys into the state: scores[j] (already scaled by 1/sqrt(d)), the
// value rows v[j] (d floats each), and keep[j] = the dropout factor of key j: 0 (dropped)
// or 1 / (1 - p) (kept); 1 when there is no dropout.
void online_softmax_update(OnlineSoftmax *st, const double *scores, const float *const *v,
                           const double *keep, int n);

// out[t] = acc[t] / sum; returns the logsumexp of all scores, max + log(sum) (what the
// backward pass needs to recompute the probabilities).
double online_softmax_finish(const OnlineSoftmax *st, float *out);

// Attention forward on the fused QKV layout (as ref_attention_forward), computed block by
// block with the online softmax; block_k keys at a time. lse [batch, heads, seq] may be NULL.
void ref_flash_attention_forward(const float *qkv, int seq, int batch, int heads, int head_dim,
                                 float p_drop, int causal, uint64_t seed, uint64_t offset,
                                 int block_k, float *ctx, float *lse);

#ifdef __cplusplus
}
#endif

#endif  // REFERENCE_ATTENTION_REFERENCE_H
