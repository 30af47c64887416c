// EXERCISE "attention_tile_gpu" (GPU, chapter 04; graded by tests/exercises/attention_tile_gpu_test.c:
// tools/grade.sh attention_tile_gpu, on a machine with an NVIDIA GPU).
//
// Write attention's forward pass the flash way: a block takes a tile of queries, walks over the
// keys tile by tile, and never stores a row of scores (chapter 04, "Flash attention"; you wrote
// the softmax part in C in the exercise online_softmax). The contract is in
// exercises/gpu_exercises.h (ex_attention_forward): q, k, v, o [heads, seq, head_dim] fp16,
// lse [heads, seq] fp32, scores scaled by 1/sqrt(head_dim), causal or not, head_dim <= 64.
//
// A plan without tensor cores, one query per thread:
//   - grid (ceil(seq / BLOCK_Q), heads), BLOCK_Q threads; thread x of block (bx, h) owns query
//     i = bx * BLOCK_Q + x of head h (seq is not a multiple of BLOCK_Q in the tests);
//   - each thread loads its q row into registers (float q_i[HEAD_DIM_MAX]) and keeps, for its
//     query, m (the largest score so far, starting at -INFINITY), l (the sum of exp(score - m))
//     and acc[HEAD_DIM_MAX] (the sum of exp(score - m) * v);
//   - for each tile of BLOCK_K keys: all threads of the block copy K's and V's rows of the tile
//     into __shared__ arrays (keys past seq as zeros), __syncthreads(), then each thread computes
//     its BLOCK_K scores, the tile's max, m_new = max(m, tile max), rescales l and acc by
//     exp(m - m_new), and adds exp(s_j - m_new) to l and exp(s_j - m_new) * v_j to acc; and a
//     __syncthreads() before the next tile overwrites the shared arrays;
//   - keys past seq, and with causal = 1 keys j > i, must get weight 0 (score -INFINITY);
//   - at the end o = acc / l, lse = m + log(l).
// Every thread must reach every __syncthreads(), including those whose query is past seq.
// Keep the loops over the head dimension at a fixed length (HEAD_DIM_MAX, with #pragma unroll):
// an array indexed by a run-time value lives in slow local memory, not in registers.
//
// The test prints a speed line: your kernel's FLOP rate against cuBLAS's fp16 GEMM (the tensor
// cores, which chapter 04's kernels use and this one does not), and the reference solution's.
#include <cuda_fp16.h>
#include <math.h>

#include "exercises/gpu_exercises.h"

enum {
    BLOCK_Q = 64,       // queries per block, one per thread
    BLOCK_K = 32,       // keys per tile in shared memory
    HEAD_DIM_MAX = 64,  // the largest head_dim (q and acc in registers: 2 x 64 floats per thread)
};

static __global__ void attention_forward_kernel(const __half *q, const __half *k, const __half *v, __half *o,
                                                float *lse, int seq, int head_dim, int causal, float scale) {
    // TODO: your code here.
}

extern "C" void ex_attention_forward(const fp16_t *q, const fp16_t *k, const fp16_t *v, fp16_t *o, float *lse,
                                     int heads, int seq, int head_dim, int causal) {
    // TODO: choose the grid and the block (this launch runs one thread).
    attention_forward_kernel<<<1, 1>>>(q, k, v, o, lse, seq, head_dim, causal, 1.0f / sqrtf((float)head_dim));
    (void)heads;
}
