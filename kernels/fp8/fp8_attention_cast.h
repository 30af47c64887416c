// The cast of attention's Q, K and V to E4M3 for the FP8 attention forward
// (kernels/attention/attention_fp8.h; step 05's --fp8-attention).
//
// Reads the 16-bit fused QKV tensor in place, as the 16-bit attention reads it:
//   qkv   [seq, batch, heads, 3 * 128] fp16 or bf16 (dtype), each head's 384 values [q | k | v];
//         token (s, b) is row s * batch + b, rows qkv_row_stride elements apart (0: packed,
//         3 * heads * 128; else a multiple of 8 and >= that). So Q, K and V are strided views:
//         no existing cast (kernels/fp8/fp8_cast.h: whole [rows, cols] matrices) fits them.
// and writes the E4M3 codes (uint8) in the FP8 forward's layouts:
//   q8, k8  [seq, batch, heads, 128], packed: q8 = fp8(q * q_scale), k8 = fp8(k * k_scale);
//   vt8     V TRANSPOSED, [batch, heads, 128, vt_row_stride]: element (b, h, c, j) =
//           fp8(V[token (j, b)][head h][c] * v_scale). The FP8 tensor cores take only K-major
//           operands and P V reduces over keys, so the keys must be contiguous.
//           vt_row_stride >= seq and a multiple of 16 (attention_fp8_vt_row_stride); the
//           keys seq .. vt_row_stride - 1 are written as zeros.
// Delayed scaling, as every FP8 tensor of step 05: q_meta, k_meta, v_meta are the tensors'
// scaling states (fp8_cast.h's layout: [FP8_META_SCALE] is read, the tensor's max |x| is
// folded into [FP8_META_HISTORY], which must start each step at 0), all on the GPU.
// E4M3, round to nearest even, saturating (as fp8_cast_transpose).
//
// Errors (DIE, an internal error: the caller checks shapes first): head_dim other than 128,
// seq / batch / heads < 1, a bad qkv_row_stride or vt_row_stride, a NULL pointer.
// One kernel, one read of Q, K and V: blocks of 64 keys of one (batch, head); V's 64 x 128
// codes are transposed through shared memory so that Vt's rows are written 32 bytes a thread.
#ifndef KERNELS_FP8_FP8_ATTENTION_CAST_H
#define KERNELS_FP8_FP8_ATTENTION_CAST_H

#include <stdint.h>

#include "common/core/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int seq, batch, heads, head_dim;  // head_dim: 128 only
    int64_t qkv_row_stride;           // elements; 0: packed (3 * heads * head_dim)
    int64_t vt_row_stride;            // bytes (elements of vt8); >= seq, a multiple of 16
    DType dtype;                      // qkv's: DTYPE_FP16 or DTYPE_BF16
} Fp8AttentionCast;

void fp8_cast_qkv_for_attention(const Fp8AttentionCast *p, const void *qkv, uint8_t *q8, uint8_t *k8, uint8_t *vt8,
                                float *q_meta, float *k_meta, float *v_meta);

#ifdef __cplusplus
}
#endif

#endif  // KERNELS_FP8_FP8_ATTENTION_CAST_H
