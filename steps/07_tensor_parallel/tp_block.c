// Step 07's Linear -> LayerNorm -> Linear block on one rank: see tp_block.h.
#include "steps/07_tensor_parallel/tp_block.h"

#include <stdlib.h>
#include <string.h>

#include "common/core/errors.h"
#include "common/gpu/gpu.h"
#include "kernels/fused/bias_epilogue.h"
#include "kernels/naive/bias.h"
#include "steps/07_tensor_parallel/split_layernorm.h"

// Rank r's slice [c0, c0 + nc) of a [rows, cols] host matrix's columns.
static float *column_slice(const float *m, int64_t rows, int cols, int c0, int nc) {
    float *s = xmalloc((size_t)(rows * nc) * sizeof(float));
    for (int64_t r = 0; r < rows; r++) memcpy(s + r * nc, m + r * cols + c0, (size_t)nc * sizeof(float));
    return s;
}

void tp_block_gpu_init(TpBlockGpu *b, const TpBlock *p, int64_t T, int tp, int rank, TpLnMode mode, float eps,
                       DType dtype) {
    const char *problem = tp_block_problem(p->hidden, p->ffn, tp);
    if (problem) fail_user("%s", problem);
    memset(b, 0, sizeof *b);
    b->h = p->hidden, b->f = p->ffn, b->fl = p->ffn / tp, b->T = T, b->dtype = dtype, b->mode = mode, b->eps = eps;
    b->rank = rank;
    const int64_t off = (int64_t)rank * b->fl;
    const size_t e = dtype_bytes(dtype);
    linear_init(&b->fc1, b->h, b->fl, p->w1 + off * b->h, p->b1 + off, dtype);  // rows: contiguous
    float *w2 = column_slice(p->w2, b->h, b->f, (int)off, b->fl);
    linear_init(&b->fc2, b->fl, b->h, w2, NULL, dtype);
    free(w2);
    if (mode == TP_LN_SHARD_LOCAL) {
        layernorm_init(&b->ln, b->fl, T, eps, p->gamma + off, p->beta + off, dtype);
    } else {
        b->gamma = dev_upload(p->gamma + off, b->fl, dtype), b->beta = dev_upload(p->beta + off, b->fl, dtype);
        b->dgamma = dev_alloc((size_t)b->fl * e), b->dbeta = dev_alloc((size_t)b->fl * e);
        b->mean = dev_alloc((size_t)T * sizeof(float)), b->rstd = dev_alloc((size_t)T * sizeof(float));
        b->sums = dev_alloc((size_t)T * 2 * sizeof(float));
    }
    b->b2 = dev_upload(p->b2, b->h, dtype), b->db2 = dev_alloc((size_t)b->h * e);
    b->db_workspace = dev_alloc(bias_grad_workspace_bytes(b->h));
    size_t th = (size_t)(T * b->h) * e, tf = (size_t)(T * b->fl) * e;
    b->z = dev_alloc(tf), b->n = dev_alloc(tf), b->dn = dev_alloc(tf), b->dz = dev_alloc(tf);
    b->out = dev_alloc(th), b->dx = dev_alloc(th);
}

void tp_block_gpu_free(TpBlockGpu *b) {
    linear_free(&b->fc1), linear_free(&b->fc2);
    if (b->mode == TP_LN_SHARD_LOCAL) layernorm_free(&b->ln);
    void *bufs[] = {b->gamma, b->beta, b->dgamma, b->dbeta, b->mean, b->rstd, b->sums, b->b2, b->db2, b->db_workspace,
                    b->z, b->n, b->out, b->dn, b->dz, b->dx};
    dev_free_all(bufs, COUNT_OF(bufs));
    memset(b, 0, sizeof *b);
}

void tp_block_gpu_forward(TpBlockGpu *b, LayerComm *lc, const void *x) {
    linear_forward(&b->fc1, x, b->z, b->T, NULL);  // column-parallel: [T, f/tp]
    if (b->mode == TP_LN_SHARD_LOCAL) {
        layernorm_forward(&b->ln, b->z, b->n, b->T);  // this slice's own statistics
    } else {
        split_ln_partial_stats(b->z, b->T, b->fl, b->sums, b->dtype);
        layer_all_reduce_f32(lc, b->sums, 2 * b->T);  // 2 floats per token
        split_ln_forward_apply(b->z, b->gamma, b->beta, b->sums, b->T, b->fl, b->f, b->eps, b->n,
                               b->mean, b->rstd, b->dtype);
    }
    linear_forward(&b->fc2, b->n, b->out, b->T, NULL);  // row-parallel: partial
    layer_all_reduce(lc, b->out, b->T * b->h, b->dtype);
    bias_add(b->out, b->b2, b->T, b->h, b->dtype);
}

void tp_block_gpu_backward(TpBlockGpu *b, LayerComm *lc, const void *dout) {
    linear_backward(&b->fc2, dout, b->dn, b->T);
    bias_grad_columns(dout, b->T, b->h, b->db2, b->db_workspace, b->dtype);
    if (b->mode == TP_LN_SHARD_LOCAL) {
        layernorm_backward(&b->ln, b->dn, NULL, b->dz, b->T);
    } else {
        split_ln_partial_grad_sums(b->dn, b->z, b->gamma, b->mean, b->rstd, b->T, b->fl, b->sums, b->dtype);
        layer_all_reduce_f32(lc, b->sums, 2 * b->T);
        split_ln_backward_apply(b->dn, b->z, b->gamma, b->mean, b->rstd, b->sums, b->T, b->fl, b->f, b->dz, b->dtype);
        split_ln_param_grads(b->dn, b->z, b->mean, b->rstd, b->T, b->fl, b->dgamma, b->dbeta, b->dtype);
    }
    linear_backward(&b->fc1, b->dz, b->dx, b->T);  // dx partial
    layer_all_reduce(lc, b->dx, b->T * b->h, b->dtype);
}

void tp_block_gpu_read_grads(const TpBlockGpu *b, TpBlock *g) {
    linear_read_grads(&b->fc1, g->w1, g->b1);
    linear_read_grads(&b->fc2, g->w2, NULL);
    if (b->mode == TP_LN_SHARD_LOCAL) {
        layernorm_read_grads(&b->ln, g->gamma, g->beta);
    } else {
        dev_download(g->gamma, b->dgamma, b->fl, b->dtype);
        dev_download(g->beta, b->dbeta, b->fl, b->dtype);
    }
    dev_download(g->b2, b->db2, b->h, b->dtype);
}
