// EXERCISE "online_softmax" (CPU, chapter 04; graded by tests/exercises/online_softmax_test.c:
// tools/grade.sh online_softmax).
//
// Flash attention never stores a row of scores: keys arrive in blocks, and each query keeps
// a running max, a running sum and a running output (reference/attention_reference.h explains the
// state; online_softmax_init in reference/attention_reference.c sets it up). Write the two
// functions below; ref_flash_attention_forward (reference/attention_reference.c) calls them block
// by block, and the graded tests compare its output with the plain reference attention.
//
// online_softmax_update, for one block of n scores:
//   1. new_max = max(old max, the block's scores)
//   2. everything accumulated so far (sum and acc) was relative to the old max:
//      multiply it by exp(old_max - new_max)
//   3. for each key j: e = exp(score_j - new_max); sum += e; acc += e * keep_j * v_j
//      (the sum counts dropped keys too: dropout acts on the normalised probabilities)
// Careful with the first block, where the old max is -infinity.
// online_softmax_finish: out = acc / sum; return max + log(sum).
#include <math.h>

#include "reference/attention_reference.h"

void online_softmax_update(OnlineSoftmax *st, const double *scores, const float *const *v,
                           const double *keep, int n) {
    (void)st, (void)scores, (void)v, (void)keep, (void)n;
    // TODO: your code here.
}

double online_softmax_finish(const OnlineSoftmax *st, float *out) {
    // TODO: your code here. This stub only clears the output.
    for (int t = 0; t < st->d; t++) out[t] = 0.0f;
    return 0.0;
}
