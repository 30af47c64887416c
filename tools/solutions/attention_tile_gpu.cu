// Attention forward with the online softmax, one query per thread: the reference solution of
// the exercise "attention_tile_gpu" (chapter 04). The contract: exercises/gpu_exercises.h.
//
// A block owns a tile of BLOCK_Q queries of one head (one query per thread) and walks over the
// keys in tiles of BLOCK_K. Each key tile is copied once into shared memory by the whole block
// and then read by every thread - all threads read the same key at the same time, which shared
// memory serves as a broadcast. Per query the thread keeps (FlashAttention, Dao et al. 2022):
//   m    the largest score so far
//   l    the sum of exp(score - m) so far
//   acc  the sum of exp(score - m) * v so far     (head_dim floats, in registers)
// and after each tile of scores s_1..s_BLOCK_K:
//   m'   = max(m, max_j s_j)
//   l    = l * exp(m - m') + sum_j exp(s_j - m')
//   acc  = acc * exp(m - m') + sum_j exp(s_j - m') v_j
// so the [seq x seq] scores never exist anywhere. At the end o = acc / l and lse = m + log(l).
//
// This is the algorithm of chapter 04's kernels without the tensor cores: there a warp computes
// a 16 x 64 tile of scores with mma.sync (or a warpgroup a 64 x 128 one with wgmma), so the
// products run at the tensor cores' rate instead of one fp32 FMA per thread per cycle.
#include <cuda_fp16.h>
#include <math.h>
#include <stdio.h>

#include "exercises/gpu_exercises.h"

enum {
    BLOCK_Q = 64,       // queries per block, one per thread
    BLOCK_K = 32,       // keys per tile in shared memory
    HEAD_DIM_MAX = 64,  // q and acc live in registers: 2 x 64 floats per thread
};

static __global__ void attention_forward_kernel(const __half *q, const __half *k, const __half *v, __half *o,
                                                float *lse, int seq, int head_dim, int causal, float scale) {
    __shared__ float k_tile[BLOCK_K][HEAD_DIM_MAX], v_tile[BLOCK_K][HEAD_DIM_MAX];
    const size_t head = (size_t)blockIdx.y * seq * head_dim;  // this head's [seq, head_dim] slices
    const int first_query = blockIdx.x * BLOCK_Q, i = first_query + threadIdx.x;
    const bool has_query = i < seq;  // the last tile's extra threads still help load the keys

    // The loops over t run to HEAD_DIM_MAX and are unrolled, so q_i and acc stay in registers
    // (an array indexed by a run-time value would go to local memory); t >= head_dim adds zeros.
    float q_i[HEAD_DIM_MAX], acc[HEAD_DIM_MAX];
#pragma unroll
    for (int t = 0; t < HEAD_DIM_MAX; t++) {
        q_i[t] = has_query && t < head_dim ? __half2float(q[head + (size_t)i * head_dim + t]) * scale : 0.0f;
        acc[t] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;

    // With the causal mask no query of this block sees keys past its last query.
    const int last_query = min(seq, first_query + BLOCK_Q) - 1;
    const int key_end = causal ? last_query + 1 : seq;
    for (int tile = 0; tile < key_end; tile += BLOCK_K) {
        __syncthreads();  // everyone is done with the previous tile
        for (int e = threadIdx.x; e < BLOCK_K * HEAD_DIM_MAX; e += blockDim.x) {
            const int j = tile + e / HEAD_DIM_MAX, t = e % HEAD_DIM_MAX;
            const bool inside = j < seq && t < head_dim;  // keys past seq: zeros, masked below
            k_tile[e / HEAD_DIM_MAX][t] = inside ? __half2float(k[head + (size_t)j * head_dim + t]) : 0.0f;
            v_tile[e / HEAD_DIM_MAX][t] = inside ? __half2float(v[head + (size_t)j * head_dim + t]) : 0.0f;
        }
        __syncthreads();  // the tile is complete
        if (!has_query) continue;

        float s[BLOCK_K], tile_max = -INFINITY;
#pragma unroll
        for (int jj = 0; jj < BLOCK_K; jj++) {
            float dot = 0.0f;
#pragma unroll
            for (int t = 0; t < HEAD_DIM_MAX; t++) dot += q_i[t] * k_tile[jj][t];
            const int j = tile + jj;
            s[jj] = j >= seq || (causal && j > i) ? -INFINITY : dot;  // padding and future keys: weight 0
            tile_max = fmaxf(tile_max, s[jj]);
        }
        const float m_new = fmaxf(m, tile_max);
        if (m_new == -INFINITY) continue;  // every key so far masked (not possible here: key 0 is seen first)
        const float rescale = expf(m - m_new);  // exp(-inf) = 0 on the first tile
        l *= rescale;
#pragma unroll
        for (int t = 0; t < HEAD_DIM_MAX; t++) acc[t] *= rescale;
#pragma unroll
        for (int jj = 0; jj < BLOCK_K; jj++) {
            const float p = expf(s[jj] - m_new);  // 0 for masked keys
            l += p;
#pragma unroll
            for (int t = 0; t < HEAD_DIM_MAX; t++) acc[t] += p * v_tile[jj][t];
        }
        m = m_new;
    }
    if (!has_query) return;
#pragma unroll
    for (int t = 0; t < HEAD_DIM_MAX; t++)
        if (t < head_dim) o[head + (size_t)i * head_dim + t] = __float2half_rn(acc[t] / l);
    lse[(size_t)blockIdx.y * seq + i] = m + logf(l);
}

extern "C" void ex_attention_forward(const fp16_t *q, const fp16_t *k, const fp16_t *v, fp16_t *o, float *lse,
                                     int heads, int seq, int head_dim, int causal) {
    if (head_dim < 1 || head_dim > HEAD_DIM_MAX) {
        fprintf(stderr, "ex_attention_forward: head_dim %d is not in 1..%d\n", head_dim, HEAD_DIM_MAX);
        return;
    }
    const dim3 grid((seq + BLOCK_Q - 1) / BLOCK_Q, heads);  // rounded up: the last queries too
    attention_forward_kernel<<<grid, BLOCK_Q>>>(q, k, v, o, lse, seq, head_dim, causal, 1.0f / sqrtf((float)head_dim));
}
