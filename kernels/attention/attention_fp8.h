// An FP8 (E4M3) flash-attention forward for Hopper (sm_90a): opt-in, head dim 128, neither
// causal nor dropping. Step 05 calls it with --fp8-attention (steps/05_fp8/README.md; the cast
// of Q, K and V into these layouts: kernels/fp8/fp8_attention_cast.h). Tested on its own in
// tests/attention/flash_fp8_test.c; timed by attention_bench --fp8.
//
// What it computes, per batch entry b, head h and query i (d = 128):
//   S[i][j] = (Q8[i] . K8[j]) * q_scale_inv * k_scale_inv             (FP8 products, float sums)
//   P[i][j] = exp(S[i][j] / sqrt(d) - m_i(t)), m_i(t) = max of S[i][j'] / sqrt(d) over the keys
//             j' of the tiles up to j's tile t (the online softmax's running maximum, in float;
//             the products of earlier tiles are rescaled when it grows, so O is exact up to
//             rounding - but where it stood when P was converted to E4M3 sets P's rounding)
//   O[i]    = sum_j fp8(P[i][j] * 256) * V8[j] * v_scale_inv / sum_j (P[i][j] * 256)
//   lse[i]  = ln(sum_j exp(S[i][j] / sqrt(d)))
// Q8, K8, V8 are the E4M3 codes, x ~ code * scale_inv (common/fp8/fp8_format.h: an FP8 tensor is
// codes plus a float scale). Both matrix products run on the tensor cores in FP8 (wgmma
// .e4m3.e4m3, k 32, float accumulators): S = Q K^T, then O += P V with P converted to E4M3 in
// registers. P's values lie in [0, 1] (relative to the row's running maximum); they are
// multiplied by 256 (2^8, folded into the exponent, so it costs nothing) before the conversion,
// so that probabilities down to 2^-14 of the row's largest stay normal E4M3 numbers (E4M3's
// smallest normal is 2^-6, its largest 448 > 256): without it, keys whose scores lie more than
// ln 64 ~ 4.2 below the row's maximum would become subnormals with steps of 2^-9 (1 to 3
// significant bits). On random test data this changes O by only ~0.4% (the rows' mass lies
// near their maxima; tests/attention/flash_fp8_test.c prints it: 3.8e-3 on an H200,
// docs/results.md#h200-eighth), but it is free (TE's FP8 attention likewise gives P a scale of
// its own before its cast, its "S" scale). The row sum is taken over the float probabilities
// (times the same 256), so the factor cancels in O = acc / sum. What remains is P's rounding
// to 3 mantissa bits (relative error <= 2^-4 per element, random in sign), which is what
// distinguishes this from float attention on the dequantised Q, K, V.
//
// Tensors (row-major, token (s, b) = row s * batch + b, as attention.h's):
//   q, k   [seq, batch, heads, 128] E4M3 codes (uint8), packed (row of a token: heads * 128 bytes)
//   vt     V TRANSPOSED: [batch, heads, 128, vt_row_stride] E4M3 codes; element (b, h, c, j) is
//          V[token j][c] of head h. The tensor cores take FP8 operands only with the reduction
//          dimension contiguous ("K-major"), and the reduction of P V runs over keys, so V must
//          come with its keys contiguous; the caller casts V into this layout (step 05:
//          kernels/fp8/fp8_attention_cast.h, from the fused qkv tensor). vt_row_stride >= seq,
//          a multiple of 16 (the TMA's stride alignment); keys seq .. vt_row_stride - 1 are
//          never read.
//   ctx    [seq, batch, heads, 128] fp16 or bf16 (dtype): O, packed.
//   lse    [batch, heads, seq] float, the natural-log logsumexp of each query's scaled scores
//          (exactly what attention_forward writes; step 05's 16-bit backward uses it).
//   q_scale_inv, k_scale_inv, v_scale_inv: DEVICE pointers to one float each (the scale_inv of
//          each tensor, FP8_META_SCALE_INV of kernels/fp8/fp8_cast.h's meta arrays: delayed
//          scaling keeps them on the GPU, so the launch needs no copy to the host).
// All device pointers 16-byte aligned.
//
// Errors (clear message, non-zero exit): head_dim other than 128, causal, dtype other than fp16
// or bf16, seq / batch / heads < 1, a bad vt_row_stride, misaligned pointers; a GPU other than
// compute capability 9.0 (the only one with wgmma) or a build without sm_90a code: fail_user,
// saying so.
//
// Sources: FlashAttention-3 (Shah et al., 2024, arXiv 2407.08608), section 3.3 (FP8: the
// accumulator-to-operand layout conversion, V transposed); NVIDIA Transformer Engine's FP8
// dot-product attention (per-tensor scale_inv of Q, K, V; O written in the model's dtype).
// The kernel: kernels/attention/flash_forward_fp8.cu.
#ifndef KERNELS_ATTENTION_ATTENTION_FP8_H
#define KERNELS_ATTENTION_ATTENTION_FP8_H

#include <stdint.h>

#include "common/core/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int seq, batch, heads;
    int head_dim;           // 128 only
    DType dtype;            // ctx's: DTYPE_FP16 or DTYPE_BF16
    int causal;             // 0 only (kept so that a caller's causal problem is refused, not ignored)
    int64_t vt_row_stride;  // vt's row, in elements (bytes); 0: seq rounded up to 16
} AttentionFp8Problem;

// The log2 of the factor P is multiplied by before its conversion to E4M3 (above).
enum { ATTENTION_FP8_P_LOG2_SCALE = 8 };

// vt's row stride for this problem (vt_row_stride, or its default).
int64_t attention_fp8_vt_row_stride(const AttentionFp8Problem *p);

// NULL if the kernel takes this problem (shapes and fields only; no GPU needed), else why not.
const char *attention_fp8_unsupported(const AttentionFp8Problem *p);

// NULL if the settings in force fit together - the K/V ring depth ATTENTION_FP8_STAGES and the
// tile width (attention_fp8_block_n_fits: 4 stages of 192-key tiles do not) - else why not, naming
// both variables. The variables are read here if not yet (a value outside their lists stops with
// a message). No GPU needed: step 05's --fp8-attention asks it with its configuration checks,
// before any GPU work; attention_forward_fp8 asks it too. Callers that try every tile width
// (flash_fp8_test, attention_bench --fp8) ask attention_fp8_block_n_fits per width instead.
const char *attention_fp8_settings_unsupported(void);

// 1 if this GPU and this build run the FP8 forward (wgmma and sm_90a code), else 0.
int attention_fp8_available(void);

// ctx and lse from the E4M3 q, k, vt (layouts above). Stops with a clear message if anything is
// unsupported. Runs on the default stream. The environment variable ATTENTION_FP8_STAGES (read
// once: "2", the default when unset or empty; "3"; "4", with 128-key tiles only; anything else
// stops with a message) sets the depth of the kernel's K/V ring in shared memory, for
// comparisons (3 and 4 were no faster than 2 on an H200: docs/results.md#h200-eighth).
void attention_forward_fp8(const AttentionFp8Problem *p, const uint8_t *q, const uint8_t *k, const uint8_t *vt,
                           const float *q_scale_inv, const float *k_scale_inv, const float *v_scale_inv, void *ctx,
                           float *lse);

// Whether attention_forward_fp8 launches persistent CTAs (1: one per SM, each looping over
// blocks of 128 queries of one head, its producer loading the next block's Q, K and V while
// the consumers finish the current one) or one block per 128 queries (0). Both compute every
// block the same way, so they give the same bits. The setting starts as the environment
// variable ATTENTION_FP8_PERSISTENT says (read at the first launch or call here: "1", the
// default when unset or empty; "0"; anything else stops with a message). Persistent CTAs were
// 7-10% faster with 192-key tiles and 4-6% with 128-key ones on an H200
// (docs/results.md#h200-ninth). Sets it to `persistent`
// (0 or 1; anything else stops with a message) and returns the previous setting, so that a
// caller (tests/attention/flash_fp8_test.c, attention_bench --fp8) can run both and restore it.
// Not thread-safe: set it between launches from one host thread.
int attention_fp8_set_persistent(int persistent);

// Keys per tile of the kernel: 192 (the default) or 128. 192 gives S's accumulators 1.5 times
// the width and takes two thirds as many online-softmax rescales per key, and two thirds as
// many turns (the two consumer warpgroups take turns to issue their products: ping-pong). Its
// shared memory is 16 KiB (Q) + 56 KiB (K and V^T) per stage + 1 KiB: 185 KiB at 3 stages, 241
// at 4, more than Hopper's 227 - so with 192 ATTENTION_FP8_STAGES=4 stops with a message.
// With persistent CTAs 192 was 1-3% faster than 128 on an H200, without them up to 2% slower
// (docs/results.md#h200-ninth). The tile width changes
// where the running maximum is taken, so it changes P's E4M3 rounding and ctx's low bits (not
// lse beyond float rounding). The setting starts as the environment variable
// ATTENTION_FP8_BLOCK_N says ("192", the default when unset or empty; "128"; anything else stops
// with a message). Sets it to block_n (128 or 192; anything else stops with a message) and
// returns the previous setting. Not thread-safe, as attention_fp8_set_persistent.
int attention_fp8_set_block_n(int block_n);

// 1 if the kernel with block_n keys per tile (128 or 192; anything else stops with a message)
// fits in shared memory at the K/V ring depth in force (ATTENTION_FP8_STAGES, read here if not
// yet), else 0 - the launch stops with a message then. No GPU needed: callers that try every
// tile width (tests/attention/flash_fp8_test.c, attention_bench --fp8) skip one that does not fit.
int attention_fp8_block_n_fits(int block_n);

#ifdef __cplusplus
}
#endif

#endif  // KERNELS_ATTENTION_ATTENTION_FP8_H
