#include "kernels/naive/naive_attention.h"

#include <math.h>

#include "common/cuda_check.h"
#include "common/gpu.h"
#include "kernels/naive/naive_ops.h"

void naive_attention_init(NaiveAttention *a, const LayerConfig *cfg) {
    a->seq = cfg->seq;
    a->batch = cfg->batch;
    a->heads = cfg->heads;
    a->head_dim = layer_head_dim(cfg);
    a->dtype = cfg->dtype;
    a->p_drop = cfg->attn_dropout;
    a->causal = cfg->causal;
    a->seed = cfg->seed;
    size_t bytes = (size_t)cfg->batch * cfg->heads * cfg->seq * cfg->seq * dtype_bytes(cfg->dtype);
    a->probs = dev_alloc(bytes);
    a->dropped = dev_alloc(bytes);
    a->dscores = dev_alloc(bytes);
}

void naive_attention_free(NaiveAttention *a) {
    dev_free(a->probs);
    dev_free(a->dropped);
    dev_free(a->dscores);
}

// One strided-batched GEMM over all batch*heads heads: C = alpha op(A) op(B), column-major.
static void batched_gemm(const NaiveAttention *a, cublasOperation_t op_a, cublasOperation_t op_b,
                         int m, int n, int k, float alpha, const void *A, int64_t lda, int64_t stride_a,
                         const void *B, int64_t ldb, int64_t stride_b, void *C, int64_t ldc,
                         int64_t stride_c) {
    const float beta = 0.0f;
    cudaDataType_t t = a->dtype == DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_16F;
    CUBLAS_CHECK(cublasGemmStridedBatchedEx((cublasHandle_t)gpu_cublas_handle(), op_a, op_b, m, n, k,
                                            &alpha, A, t, (int)lda, stride_a, B, t, (int)ldb, stride_b,
                                            &beta, C, t, (int)ldc, stride_c, a->batch * a->heads,
                                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// Pointers to head 0's q, k, v inside the fused QKV tensor (2 bytes per element).
static const char *part(const void *qkv, int which, int d) { return (const char *)qkv + (size_t)which * d * 2; }

void naive_attention_forward(NaiveAttention *a, const void *qkv, void *ctx, uint64_t dropout_offset) {
    const int s = a->seq, d = a->head_dim;
    const int64_t ld_qkv = (int64_t)a->batch * a->heads * 3 * d;  // between tokens of one head
    const int64_t ld_ctx = (int64_t)a->batch * a->heads * d;
    const int64_t rows = (int64_t)a->batch * a->heads * s;
    const float scale = 1.0f / sqrtf((float)d);
    // S (row-major [s_q, s_k]) is S^T in column-major = K Q^T: A = K (op T), B = Q.
    batched_gemm(a, CUBLAS_OP_T, CUBLAS_OP_N, s, s, d, scale, part(qkv, 1, d), ld_qkv, 3 * d,
                 part(qkv, 0, d), ld_qkv, 3 * d, a->dscores, s, (int64_t)s * s);
    naive_softmax_forward(a->dscores, a->probs, rows, s, a->causal, a->dtype);
    // The probabilities' [batch*heads, s, s] layout makes the flat index the logical one.
    naive_dropout(a->probs, a->dropped, rows * s, a->p_drop, a->seed, dropout_offset, a->dtype);
    // ctx^T [d x s_q] = V^T [d x s_k] . Pd^T [s_k x s_q]
    batched_gemm(a, CUBLAS_OP_N, CUBLAS_OP_N, d, s, s, 1.0f, part(qkv, 2, d), ld_qkv, 3 * d,
                 a->dropped, s, (int64_t)s * s, ctx, ld_ctx, d);
}

void naive_attention_backward(NaiveAttention *a, const void *qkv, const void *dctx, void *dqkv,
                              uint64_t dropout_offset) {
    const int s = a->seq, d = a->head_dim;
    const int64_t ld_qkv = (int64_t)a->batch * a->heads * 3 * d;
    const int64_t ld_ctx = (int64_t)a->batch * a->heads * d;
    const int64_t rows = (int64_t)a->batch * a->heads * s;
    const float scale = 1.0f / sqrtf((float)d);
    char *dq = (char *)dqkv, *dk = dq + (size_t)d * 2, *dv = dq + (size_t)2 * d * 2;
    // dPd = dO V^T: in column-major dPd^T [s_k x s_q] = V [s_k x d] . dO^T [d x s_q]
    batched_gemm(a, CUBLAS_OP_T, CUBLAS_OP_N, s, s, d, 1.0f, part(qkv, 2, d), ld_qkv, 3 * d, dctx,
                 ld_ctx, d, a->dscores, s, (int64_t)s * s);
    // dV = Pd^T dO: dV^T [d x s_k] = dO^T [d x s_q] . Pd [s_q x s_k]
    batched_gemm(a, CUBLAS_OP_N, CUBLAS_OP_T, d, s, s, 1.0f, dctx, ld_ctx, d, a->dropped, s,
                 (int64_t)s * s, dv, ld_qkv, 3 * d);
    // Through dropout (same mask, recomputed), then softmax: dS = P (dP - rowsum(dP P)).
    naive_dropout(a->dscores, a->dscores, rows * s, a->p_drop, a->seed, dropout_offset, a->dtype);
    naive_softmax_backward(a->probs, a->dscores, a->dscores, rows, s, a->dtype);
    // dQ = scale dS K: dQ^T [d x s_q] = K^T [d x s_k] . dS^T [s_k x s_q]
    batched_gemm(a, CUBLAS_OP_N, CUBLAS_OP_N, d, s, s, scale, part(qkv, 1, d), ld_qkv, 3 * d,
                 a->dscores, s, (int64_t)s * s, dq, ld_qkv, 3 * d);
    // dK = scale dS^T Q: dK^T [d x s_k] = Q^T [d x s_q] . dS [s_q x s_k]
    batched_gemm(a, CUBLAS_OP_N, CUBLAS_OP_T, d, s, s, scale, part(qkv, 0, d), ld_qkv, 3 * d,
                 a->dscores, s, (int64_t)s * s, dk, ld_qkv, 3 * d);
}
