// Unfused attention: two batched cuBLAS products around a softmax and a dropout kernel.
//
// cuBLAS is column-major, our tensors row-major. A row-major matrix X [rows, cols] with row
// stride ld is, to cuBLAS, the column-major matrix X^T [cols, rows] with the same ld. So to
// get the row-major C = A B we ask cuBLAS for C^T = B^T A^T: the operands swap places and
// m, n become the column counts. Every call below is written out with that in mind.
#include "kernels/naive/naive_attention.h"

#include <math.h>

#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu.h"
#include "common/gpu/gpu_phase.h"
#include "kernels/naive/dropout.h"
#include "kernels/naive/softmax.h"

static cudaDataType_t cuda_type(DType d) { return d == DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_16F; }

// Row-major, per batch entry: C[M, N] = alpha * op(A)[M, K] @ op(B)[K, N], where op(A) is
// A or A^T as trans_a says (A is stored [M, K] if not transposed, else [K, M]), likewise B.
// lda/ldb/ldc are row strides, stride_* the distance between consecutive batch entries.
typedef struct {
    const void *ptr;
    int ld;
    long long stride;
} Operand;

static void batched_matmul(int trans_a, int trans_b, int M, int N, int K, float alpha, Operand A,
                           Operand B, void *C, int ldc, long long stride_c, int count, DType dtype) {
    const float beta = 0.0f;
    // C^T = op(B)^T op(A)^T in column-major: cuBLAS's first operand is our B.
    // Our row-major B, seen column-major, is already B^T: so "not transposed" for us is
    // CUBLAS_OP_N for cuBLAS too.
    cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(
        (cublasHandle_t)gpu_cublas_handle(), op_b, op_a, N, M, K, &alpha, B.ptr, cuda_type(dtype),
        B.ld, B.stride, A.ptr, cuda_type(dtype), A.ld, A.stride, &beta, C, cuda_type(dtype), ldc,
        stride_c, count, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

void naive_attention_init(NaiveAttention *a, const LayerConfig *cfg) {
    a->seq = cfg->seq;
    a->batch = cfg->batch;
    a->heads = cfg->heads;
    a->head_dim = layer_head_dim(cfg);
    a->dtype = cfg->dtype;
    a->p_drop = cfg->attn_dropout;
    a->causal = cfg->causal;
    a->seed = cfg->seed;
    size_t bytes = (size_t)a->batch * a->heads * a->seq * a->seq * dtype_bytes(a->dtype);
    a->probs = dev_alloc(bytes);
    a->dropped = dev_alloc(bytes);
    a->dscores = dev_alloc(bytes);
}

void naive_attention_free(NaiveAttention *a) {
    dev_free(a->probs);
    dev_free(a->dropped);
    dev_free(a->dscores);
    a->probs = a->dropped = a->dscores = NULL;
}

// Where Q, K, V of batch entry 0 start and how to step through them (see the header).
typedef struct {
    int n;                       // batch entries: batch * heads
    int qkv_ld, ctx_ld;          // row strides (one token to the next) of qkv and ctx
    long long qkv_stride;        // batch entry to the next in qkv: 3d
    long long ctx_stride;        // ... in ctx: d
    long long score_stride;      // ... in the [n, seq, seq] buffers: seq * seq
    size_t elem;                 // bytes per element
} Layout;

static Layout layout_of(const NaiveAttention *a) {
    Layout l;
    l.n = a->batch * a->heads;
    l.qkv_ld = a->batch * a->heads * 3 * a->head_dim;
    l.ctx_ld = a->batch * a->heads * a->head_dim;
    l.qkv_stride = 3LL * a->head_dim;
    l.ctx_stride = a->head_dim;
    l.score_stride = (long long)a->seq * a->seq;
    l.elem = dtype_bytes(a->dtype);
    return l;
}

// Part 0, 1, 2 (q, k, v) of qkv as a batched operand.
static Operand qkv_part(const void *qkv, int part, const NaiveAttention *a, const Layout *l) {
    Operand o = {(const char *)qkv + (size_t)part * a->head_dim * l->elem, l->qkv_ld, l->qkv_stride};
    return o;
}

void naive_attention_forward(NaiveAttention *a, const void *qkv, void *ctx, uint64_t dropout_offset) {
    const Layout l = layout_of(a);
    const int s = a->seq, d = a->head_dim;
    const float scale = 1.0f / sqrtf((float)d);
    const int64_t rows = (int64_t)l.n * s;
    Operand scores = {a->dscores, s, l.score_stride};  // the scratch holds S until softmax
    Operand dropped = {a->dropped, s, l.score_stride};
    gpu_phase(CAT_ATTN_FWD);  // the whole of it: products, softmax and dropout

    // S = Q K^T * scale: [s, d] x [d, s] per entry. Folding the scale into the product keeps
    // the stored 16-bit scores small.
    batched_matmul(0, 1, s, s, d, scale, qkv_part(qkv, 0, a, &l), qkv_part(qkv, 1, a, &l),
                   a->dscores, s, l.score_stride, l.n, a->dtype);
    softmax_forward(scores.ptr, rows, s, 1.0f, a->causal, a->probs, a->dtype);
    // probs is [batch * heads, seq, seq]: row r is query r % seq of head r / seq.
    attention_dropout_forward(a->probs, rows, s, a->p_drop, a->seed, dropout_offset, a->dropped, a->dtype);
    // ctx = D V: [s, s] x [s, d], written straight into ctx's [s, b, heads, d] layout.
    batched_matmul(0, 0, s, d, s, 1.0f, dropped, qkv_part(qkv, 2, a, &l), ctx, l.ctx_ld,
                   l.ctx_stride, l.n, a->dtype);
    gpu_phase_end();
}

// With D = dropout(P) and ctx = D V:
//   dD = dctx V^T,  dV = D^T dctx,  dP = dropout'(dD),  dS = softmax'(dP),
//   dQ = dS K * scale,  dK = dS^T Q * scale.
void naive_attention_backward(NaiveAttention *a, const void *qkv, const void *dctx, void *dqkv,
                              uint64_t dropout_offset) {
    const Layout l = layout_of(a);
    const int s = a->seq, d = a->head_dim;
    const float scale = 1.0f / sqrtf((float)d);
    const int64_t rows = (int64_t)l.n * s;
    Operand dctx_op = {dctx, l.ctx_ld, l.ctx_stride};
    Operand dscores = {a->dscores, s, l.score_stride};
    Operand dropped = {a->dropped, s, l.score_stride};
    char *dq = dqkv, *dk = (char *)dqkv + (size_t)d * l.elem, *dv = (char *)dqkv + 2 * (size_t)d * l.elem;
    gpu_phase(CAT_ATTN_BWD);

    // dD = dctx V^T: [s, d] x [d, s].
    batched_matmul(0, 1, s, s, d, 1.0f, dctx_op, qkv_part(qkv, 2, a, &l), a->dscores, s,
                   l.score_stride, l.n, a->dtype);
    // dV = D^T dctx: [s, s] x [s, d].
    batched_matmul(1, 0, s, d, s, 1.0f, dropped, dctx_op, dv, l.qkv_ld, l.qkv_stride, l.n, a->dtype);
    // Through the dropout (the same mask, drawn again) and the softmax, in place.
    attention_dropout_backward(a->dscores, rows, s, a->p_drop, a->seed, dropout_offset, a->dscores, a->dtype);
    softmax_backward(a->dscores, a->probs, rows, s, a->dscores, a->dtype);
    // dQ = dS K * scale: [s, s] x [s, d].
    batched_matmul(0, 0, s, d, s, scale, dscores, qkv_part(qkv, 1, a, &l), dq, l.qkv_ld,
                   l.qkv_stride, l.n, a->dtype);
    // dK = dS^T Q * scale: [s, s]^T x [s, d].
    batched_matmul(1, 0, s, d, s, scale, dscores, qkv_part(qkv, 0, a, &l), dk, l.qkv_ld,
                   l.qkv_stride, l.n, a->dtype);
    gpu_phase_end();
}
