#include "reference/attention_reference.h"

#include <math.h>
#include <stdlib.h>

#include "common/core/errors.h"
#include "common/core/philox.h"

// The state before any key: nothing summed, maximum -infinity. (online_softmax_update and
// online_softmax_finish are the graded exercise "online_softmax": docs/exercises.md.)
void online_softmax_init(OnlineSoftmax *st, double *acc, int d) {
    st->max = -INFINITY;
    st->sum = 0.0;
    st->acc = acc;
    st->d = d;
    for (int t = 0; t < d; t++) acc[t] = 0.0;
}

void ref_flash_attention_forward(const float *qkv, int seq, int batch, int heads, int head_dim,
                                 float p_drop, int causal, uint64_t seed, uint64_t offset,
                                 int block_k, float *ctx, float *lse) {
    const int d = head_dim;
    const int64_t token_stride = (int64_t)batch * heads * 3 * d;  // between tokens of one head
    const double scale = 1.0 / sqrt((double)d);
    double *acc = xmalloc((size_t)d * sizeof(double));
    double *scores = xmalloc((size_t)block_k * sizeof(double));
    double *keep = xmalloc((size_t)block_k * sizeof(double));
    const float **v = xmalloc((size_t)block_k * sizeof(float *));
    for (int b = 0; b < batch; b++) {
        for (int h = 0; h < heads; h++) {
            const float *head = qkv + ((int64_t)b * heads + h) * 3 * d;  // token 0's q of this head
            for (int i = 0; i < seq; i++) {
                const float *q = head + i * token_stride;
                OnlineSoftmax st;
                online_softmax_init(&st, acc, d);
                int keys = causal ? i + 1 : seq;
                for (int j0 = 0; j0 < keys; j0 += block_k) {
                    int n = keys - j0 < block_k ? keys - j0 : block_k;
                    for (int j = 0; j < n; j++) {
                        const float *k = head + (int64_t)(j0 + j) * token_stride + d;
                        double s = 0.0;
                        for (int t = 0; t < d; t++) s += (double)q[t] * k[t];
                        scores[j] = s * scale;
                        v[j] = k + d;
                        uint64_t index = attention_dropout_index((uint64_t)b * heads + h, i, j0 + j, seq);
                        keep[j] = p_drop > 0.0f ? (dropout_keep(seed, offset, index, p_drop) ? (double)dropout_keep_scale(p_drop) : 0.0) : 1.0;
                    }
                    online_softmax_update(&st, scores, v, keep, n);
                }
                double l = online_softmax_finish(&st, ctx + (((int64_t)i * batch + b) * heads + h) * d);
                if (lse) lse[((int64_t)b * heads + h) * seq + i] = (float)l;
            }
        }
    }
    free(acc);
    free(scores);
    free(keep);
    free(v);
}
