// Fused ("flash") attention, forward and backward, on the tensor cores.
//
// The [seq x seq] scores never reach device memory. Forward: each block of 128 queries
// streams over tiles of keys, computes S = Q K^T in registers, updates a running maximum
// and sum (the online softmax, reference/attention_reference.h shows it in plain C) and accumulates
// P V; it saves one float per query, the logsumexp, for backward. Backward recomputes P
// block by block from Q, K and the logsumexp (FlashAttention-2's scheme).
//
// Two sets of kernels do it: the mma.sync ones (flash_attention.cu, any GPU since Ampere;
// warps load their operands into registers), and Hopper's wgmma ones (flash_forward_wgmma.cu,
// flash_backward_wgmma.cu; the tensor cores read operands from shared memory), which run
// by default where they can (flash_attention_set_kernels).
//
// q, k, v are read straight from the fused QKV projection's output, [seq, batch, heads,
// 3*d] with each head's 3*d values [q | k | v]; ctx is [seq, batch, heads, d]; dqkv has
// qkv's layout. Attention dropout is drawn inside the kernels from Philox, probability (b,
// h, i, j) keyed by attention_dropout_index(b * heads + h, i, j, seq) (common/core/philox.h: one
// random byte per element, one call per 16 values a thread holds), so the CPU reference and
// step 01 draw the same mask. Head dims 64 and 128; any
// seq; fp16 and bf16; optional causal.
#ifndef KERNELS_ATTENTION_FLASH_ATTENTION_H
#define KERNELS_ATTENTION_FLASH_ATTENTION_H

#include <stddef.h>
#include <stdint.h>

#include "common/core/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

// Which kernels run. FLASH_KERNELS_WGMMA (the default): Hopper's warpgroup MMA
// (flash_forward_wgmma.cu; flash_backward_wgmma.cu at head dim 128) on GPUs of compute
// capability 9.0; elsewhere, and for the backward at head dim 64, the mma.sync kernels.
// FLASH_KERNELS_MMA_SYNC: the FlashAttention-2-style mma.sync kernels (flash_attention.cu),
// kept so that the tests check both and the benchmark compares them. Returns the previous.
typedef enum { FLASH_KERNELS_WGMMA, FLASH_KERNELS_MMA_SYNC } FlashKernels;
FlashKernels flash_attention_set_kernels(FlashKernels kernels);

// NULL if the kernels support this head dim, else why not (naming head_dim).
const char *flash_attention_unsupported(int head_dim);

// lse: [batch, heads, seq] float, the logsumexp of each query's scaled scores.
void flash_attention_forward(const void *qkv, void *ctx, float *lse, int seq, int batch, int heads,
                             int head_dim, DType dtype, float p_drop, int causal, uint64_t seed,
                             uint64_t offset);

// Scratch of the backward: rowsum(dO * O) per query and a float accumulator for dQ.
size_t flash_attention_backward_scratch_bytes(int seq, int batch, int heads, int head_dim);

// dqkv (all of it) from dctx, with ctx and lse as the forward left them.
void flash_attention_backward(const void *qkv, const void *ctx, const void *dctx, const float *lse,
                              void *dqkv, void *scratch, int seq, int batch, int heads, int head_dim,
                              DType dtype, float p_drop, int causal, uint64_t seed, uint64_t offset);

// The same on views: token (s, b)'s qkv values start qkv_row_stride elements after token
// (s, b - 1)'s (3 * hidden when qkv is a tensor of its own; more when it is the first 3 *
// hidden columns of a wider tensor, as in step 06's fused input projection), and likewise
// ctx (and dctx) with ctx_row_stride. dqkv has qkv's strides.
void flash_attention_forward_strided(const void *qkv, int64_t qkv_row_stride, void *ctx, int64_t ctx_row_stride,
                                     float *lse, int seq, int batch, int heads, int head_dim, DType dtype,
                                     float p_drop, int causal, uint64_t seed, uint64_t offset);
void flash_attention_backward_strided(const void *qkv, int64_t qkv_row_stride, const void *ctx, const void *dctx,
                                      int64_t ctx_row_stride, const float *lse, void *dqkv, void *scratch, int seq,
                                      int batch, int heads, int head_dim, DType dtype, float p_drop, int causal,
                                      uint64_t seed, uint64_t offset);

// Tensor parallelism (step 07): this rank's `heads` are heads [first_head, first_head + heads)
// of a layer with total_heads; q, k, v, ctx are the rank's own contiguous tensors. Only the
// dropout mask depends on it: it is drawn with the head's index in the whole layer, so every
// tp draws the mask of the unsharded layer.
void flash_attention_forward_shard(const void *qkv, void *ctx, float *lse, int seq, int batch, int heads,
                                   int total_heads, int first_head, int head_dim, DType dtype, float p_drop,
                                   int causal, uint64_t seed, uint64_t offset);
void flash_attention_backward_shard(const void *qkv, const void *ctx, const void *dctx, const float *lse, void *dqkv,
                                    void *scratch, int seq, int batch, int heads, int total_heads, int first_head,
                                    int head_dim, DType dtype, float p_drop, int causal, uint64_t seed,
                                    uint64_t offset);

#ifdef __cplusplus
}
#endif

#endif  // KERNELS_ATTENTION_FLASH_ATTENTION_H
