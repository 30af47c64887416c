// The online softmax, the reference solution of the exercise "online_softmax".
#include <math.h>

#include "reference/attention_reference.h"

void online_softmax_update(OnlineSoftmax *st, const double *scores, const float *const *v,
                           const double *keep, int n) {
    double block_max = -INFINITY;
    for (int j = 0; j < n; j++) block_max = fmax(block_max, scores[j]);
    double new_max = fmax(st->max, block_max);
    if (new_max == -INFINITY) return;  // nothing seen yet
    // Everything accumulated so far was relative to the old maximum: rescale it.
    double rescale = exp(st->max - new_max);  // exp(-inf) = 0 on the first block
    st->sum *= rescale;
    for (int t = 0; t < st->d; t++) st->acc[t] *= rescale;
    for (int j = 0; j < n; j++) {
        double e = exp(scores[j] - new_max);
        st->sum += e;  // the normaliser counts dropped keys too: dropout acts after softmax
        double w = e * keep[j];
        for (int t = 0; t < st->d; t++) st->acc[t] += w * v[j][t];
    }
    st->max = new_max;
}

double online_softmax_finish(const OnlineSoftmax *st, float *out) {
    for (int t = 0; t < st->d; t++) out[t] = (float)(st->acc[t] / st->sum);
    return st->max + log(st->sum);
}
