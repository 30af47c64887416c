// Softmax: one thread block per row. Three passes over the row (it stays in L1/L2): the
// maximum, the sum of exponentials, then the normalised values. Subtracting the maximum
// keeps exp() from overflowing; it does not change the result.
#include "common/gpu/gpu_phase.h"
#include "kernels/naive/block_reduce.cuh"
#include "kernels/naive/softmax.h"

static const int SOFTMAX_THREADS = 256;

template <typename T>
__global__ void softmax_forward_kernel(const T *scores, int seq, float scale, int causal, T *probs) {
    const int64_t row = blockIdx.x;
    const T *in = scores + row * seq;
    T *out = probs + row * seq;
    const int last = causal ? (int)(row % seq) : seq - 1;  // the last key this query sees
    float m = -INFINITY;
    for (int j = threadIdx.x; j <= last; j += blockDim.x) m = fmaxf(m, to_float(in[j]) * scale);
    m = block_max(m);
    float sum = 0.0f;
    for (int j = threadIdx.x; j <= last; j += blockDim.x) sum += __expf(to_float(in[j]) * scale - m);
    const float inv_sum = 1.0f / block_sum(sum);
    for (int j = threadIdx.x; j < seq; j += blockDim.x)
        out[j] = from_float<T>(j <= last ? __expf(to_float(in[j]) * scale - m) * inv_sum : 0.0f);
}

template <typename T>
__global__ void softmax_backward_kernel(const T *dprobs, const T *probs, int seq, T *dscores) {
    const int64_t row = blockIdx.x;
    const T *dp = dprobs + row * seq, *p = probs + row * seq;
    float dot = 0.0f;
    for (int j = threadIdx.x; j < seq; j += blockDim.x) dot += to_float(dp[j]) * to_float(p[j]);
    dot = block_sum(dot);
    for (int j = threadIdx.x; j < seq; j += blockDim.x)
        dscores[row * seq + j] = from_float<T>(to_float(p[j]) * (to_float(dp[j]) - dot));
}

extern "C" void softmax_forward(const void *scores, int64_t rows, int seq, float scale, int causal,
                                void *probs, DType dtype) {
    if (rows <= 0) return;
    if (rows > 0x7fffffff) DIE("softmax_forward: %lld rows is too many for a 1D grid", (long long)rows);
    gpu_phase(CAT_ATTN_FWD);
    DISPATCH_DTYPE(dtype, T,
                   softmax_forward_kernel<T><<<(unsigned)rows, SOFTMAX_THREADS>>>(
                       (const T *)scores, seq, scale, causal, (T *)probs));
    CHECK_LAUNCH();
    gpu_phase_end();
}

extern "C" void softmax_backward(const void *dprobs, const void *probs, int64_t rows, int seq,
                                 void *dscores, DType dtype) {
    if (rows <= 0) return;
    if (rows > 0x7fffffff) DIE("softmax_backward: %lld rows is too many for a 1D grid", (long long)rows);
    gpu_phase(CAT_ATTN_BWD);
    DISPATCH_DTYPE(dtype, T,
                   softmax_backward_kernel<T><<<(unsigned)rows, SOFTMAX_THREADS>>>(
                       (const T *)dprobs, (const T *)probs, seq, (T *)dscores));
    CHECK_LAUNCH();
    gpu_phase_end();
}
