// Step 06's parallel layer on one tensor-parallel rank: see tp_parallel_layer.h.
#include "steps/07_tensor_parallel/tp_parallel_layer.h"

#include <cuda_runtime.h>
#include <string.h>

#include "common/core/errors.h"
#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu.h"
#include "kernels/attention/attention.h"
#include "kernels/fused/elementwise.h"
#include "kernels/fused/bias_epilogue.h"
#include "modules/gemm.h"
#include "reference/tp_layer_reference.h"
#include "reference/tp_reference.h"
#include "steps/07_tensor_parallel/row_parallel.h"
#include "steps/07_tensor_parallel/tp_region.h"

static void *tensor(TpParallelLayer *m, int64_t rows, int64_t cols, int kept) {
    return tp_activation_tensor(&m->activation_bytes, rows, cols, m->cfg.dtype, kept);
}

// Attention on this rank's heads, read in place: q, k, v are the first 3 h/tp columns of the
// fused input GEMM's output (row stride n_in), and ctx goes straight into the first h/tp
// columns of the fused output GEMM's input (row stride k_out); their gradients likewise.
// Under --recompute-gelu ctx is a packed [T, h/tp] tensor of its own (the kept one), and its
// gradient a packed copy (below).
static AttentionProblem attention_problem(const TpParallelLayer *m) {
    AttentionProblem p = attention_layer_problem(&m->cfg);
    p.heads = m->heads_local, p.total_heads = m->cfg.heads, p.first_head = m->first_head;
    p.qkv_row_stride = m->n_in, p.ctx_row_stride = m->sched.recompute_gelu ? 0 : m->k_out;
    return p;
}

// Columns [0, h/tp) of the [T, k_out] tensor cat to or from the packed [T, h/tp] tensor ctx.
static void ctx_columns(const TpParallelLayer *m, void *cat, void *ctx, int to_cat) {
    const size_t e = dtype_bytes(m->cfg.dtype), row = (size_t)m->hl * e, cat_row = (size_t)m->k_out * e;
    if (to_cat) CUDA_CHECK(cudaMemcpy2DAsync(cat, cat_row, ctx, row, row, (size_t)m->T, cudaMemcpyDeviceToDevice, 0));
    else CUDA_CHECK(cudaMemcpy2DAsync(ctx, row, cat, cat_row, row, (size_t)m->T, cudaMemcpyDeviceToDevice, 0));
}

// g = GELU(h1) into columns [h/tp, k_out) of cat, h1 read in place from [q k v | h1].
static void gelu_into_cat(const TpParallelLayer *m, void *cat) {
    const size_t e = dtype_bytes(m->cfg.dtype);
    gelu_forward_strided((char *)m->in_out + 3 * m->hl * e, m->n_in, (char *)cat + m->hl * e, m->k_out, m->T, m->fl,
                         m->cfg.dtype);
}

void tp_parallel_layer_init(TpParallelLayer *m, const LayerConfig *c, int tp, int rank, int sequence_parallel,
                            const TpSchedule *sched, const LayerParams *shard) {
    memset(m, 0, sizeof *m);
    // The variant, for the schedule's check only: recomputation is the schedule's (sched).
    const TpVariant v = {.layer = TP_LAYER_PARALLEL, .sequence_parallel = sequence_parallel};
    tp_require_valid_schedule(c, tp, &v, sched);
    m->cfg = *c;
    m->tp = tp, m->rank = rank, m->sequence_parallel = sequence_parallel, m->sched = *sched;
    m->hl = c->hidden / tp, m->fl = c->ffn / tp, m->heads_local = c->heads / tp, m->first_head = rank * m->heads_local;
    m->n_in = 3 * m->hl + m->fl, m->k_out = m->hl + m->fl;
    const AttentionProblem ap = attention_problem(m);
    const char *why = attention_unsupported(&ap);
    if (why) fail_user("step 07: %s", why);
    m->T = layer_tokens(c), m->Tl = sequence_parallel ? m->T / tp : m->T;
    const int h = c->hidden;
    const int64_t T = m->T, Tl = m->Tl;
    const int keep_gathered = sequence_parallel && sched->sp_input == SP_KEEP_GATHERED;
    TpFusedShard f;
    tp_fused_shard_alloc(c, tp, &f);
    tp_fuse_shard(c, tp, shard, &f);
    layernorm_init(&m->ln, h, Tl, c->eps, f.ln_weight, f.ln_bias, c->dtype);
    linear_init(&m->in, h, m->n_in, f.w_in, f.b_in, c->dtype);
    linear_init(&m->out, m->k_out, h, f.w_out, NULL, c->dtype);
    m->b_out = dev_upload(f.b_out, h, c->dtype);
    m->db_out = dev_alloc((size_t)h * dtype_bytes(c->dtype));
    m->db_workspace = dev_alloc(bias_grad_workspace_bytes(h));
    tp_fused_shard_free(&f);
    // What LN's backward reads and did not allocate here: the layer's input x (the caller's
    // buffer, LayerNorm.saved_x) and the per-row mean and rstd (fp32).
    m->activation_bytes += (size_t)(Tl * h) * dtype_bytes(c->dtype) + 2 * (size_t)Tl * sizeof(float);
    m->dz_loc = tensor(m, Tl, h, 0);
    // LN's output: kept, or (--recompute-layernorm) written into dz_loc, which forward does not
    // use, and computed there again in backward for W_in's wgrad, after attention's backward
    // (dz_loc's last reader: W_out's dgrad and wgrad, and under --recompute-gelu plain TP's dctx copy).
    m->a_loc = sched->recompute_layernorm ? m->dz_loc : tensor(m, Tl, h, 1);
    // W_in's input: under SP kept for its wgrad only with SP_KEEP_GATHERED (else gathered again).
    m->a = sequence_parallel ? tensor(m, T, h, keep_gathered) : m->a_loc;
    m->in_out = tensor(m, T, m->n_in, 1);                      // h1 for GELU's backward
    m->lse = dev_alloc((size_t)c->batch * m->heads_local * c->seq * sizeof(float));
    m->activation_bytes += (size_t)c->batch * m->heads_local * c->seq * sizeof(float);
    m->d_cat = tensor(m, T, m->k_out, 0);
    // W_out's input [ctx | g]: kept; or (--recompute-gelu) ctx kept alone and [ctx | g] put
    // together in backward's d_cat, in forward for W_out's fprop and again in backward for its wgrad.
    m->ctx = sched->recompute_gelu ? tensor(m, T, m->hl, 1) : NULL;
    m->cat = sched->recompute_gelu ? m->d_cat : tensor(m, T, m->k_out, 1);
    m->z = tensor(m, T, h, 0);
    m->z_loc = sequence_parallel ? tensor(m, Tl, h, 0) : m->z;
    m->y = tensor(m, Tl, h, 0);
    m->dz = !sequence_parallel ? m->dz_loc : keep_gathered ? tensor(m, T, h, 0) : m->a;
    m->d_in = tensor(m, T, m->n_in, 0);
    m->d_a = tensor(m, T, h, 0);
    m->d_a_loc = sequence_parallel ? tensor(m, Tl, h, 0) : m->d_a;
    m->dx = tensor(m, Tl, h, 0);
    m->attn_scratch = dev_alloc(attention_backward_workspace_bytes(&ap));
}

void tp_parallel_layer_free(TpParallelLayer *m) {
    layernorm_free(&m->ln), linear_free(&m->in), linear_free(&m->out);
    if (m->a_loc != m->dz_loc) dev_free(m->a_loc);
    void *bufs[] = {m->b_out, m->db_out, m->db_workspace, m->in_out, m->lse, m->z, m->y,
                    m->dz_loc, m->d_cat, m->d_in, m->d_a, m->dx, m->attn_scratch};
    dev_free_all(bufs, COUNT_OF(bufs));
    if (m->cat != m->d_cat) dev_free(m->cat);
    if (m->ctx) dev_free(m->ctx);
    if (m->sequence_parallel) {
        void *sp[] = {m->a, m->z_loc, m->d_a_loc};
        dev_free_all(sp, COUNT_OF(sp));
        if (m->dz != m->a) dev_free(m->dz);
    }
    memset(m, 0, sizeof *m);
}

void tp_parallel_layer_forward(TpParallelLayer *m, LayerComm *lc, const void *x, uint64_t step) {
    const LayerConfig *c = &m->cfg;
    const int sp = m->sequence_parallel;
    layernorm_forward(&m->ln, x, m->a_loc, m->Tl);
    // Column-parallel: [T, 3h/tp + f/tp] from all T tokens (SP: gathered beside the GEMM on the
    // rank's own)
    column_parallel_forward(&m->in, lc, sp, m->a_loc, m->a, m->in_out, m->T);
    const AttentionProblem ap = attention_problem(m);
    const AttentionDropout drop = attention_layer_dropout(c, step);
    if (m->sched.recompute_gelu) {  // ctx into its kept tensor, and a copy beside g
        attention_forward(&ap, &drop, m->in_out, m->ctx, m->lse);
        ctx_columns(m, m->cat, m->ctx, 1);
    } else {
        attention_forward(&ap, &drop, m->in_out, m->cat, m->lse);
    }
    gelu_into_cat(m, m->cat);
    // Row-parallel: both branches' partial [T, h], summed (plain TP: optionally in row blocks).
    row_parallel_forward(&m->out, lc, sp, m->cat, m->z, m->z_loc, m->T, m->Tl, m->sched.fprop_chunks);
    hidden_bias_dropout_add_forward(c, step, sp, m->rank, m->Tl, m->z_loc, m->b_out, x, m->y);
}

// --recompute-gelu: W_out's input [ctx | g] put together again in d_cat (where forward had it:
// the input the Linear recorded) from the kept ctx and GELU(h1), as in forward.
static void recompute_w_out_input(void *module) {
    TpParallelLayer *m = module;
    ctx_columns(m, m->d_cat, m->ctx, 1);
    gelu_into_cat(m, m->d_cat);
}

void tp_parallel_layer_backward(TpParallelLayer *m, LayerComm *lc, const void *dout, uint64_t step) {
    const LayerConfig *c = &m->cfg;
    const DType dt = c->dtype;
    const int h = c->hidden, sp = m->sequence_parallel, hl = m->hl;
    const int regather = sp && m->sched.sp_input == SP_REGATHER;
    const size_t e = dtype_bytes(dt);
    hidden_bias_dropout_backward(c, step, sp, m->rank, m->Tl, dout, m->dz_loc, m->db_out, m->db_workspace);
    const AttentionProblem ap = attention_problem(m);
    const AttentionDropout drop = attention_layer_dropout(c, step);
    // W_out's backward (tp_region.h): under SP the output gradient is gathered into dz (under
    // SP_REGATHER the buffer that held LN's gathered output in forward); plain TP: dz is dz_loc.
    // Under --recompute-gelu the wgrad runs first, on [ctx | g] put together again in d_cat,
    // and the dgrad then overwrites d_cat with the gradient.
    if (m->sched.recompute_gelu) {
        row_parallel_backward_recomputing_input(&m->out, lc, sp, m->dz_loc, m->dz, m->d_cat, m->T, m->Tl,
                                                recompute_w_out_input, m);
        // attention's backward reads ctx and its gradient packed: the gradient's columns of
        // d_cat copied into dz's buffer, which nothing reads any more in this step
        ctx_columns(m, m->d_cat, m->dz, 0);
        attention_backward(&ap, &drop, m->in_out, m->ctx, m->dz, m->lse, m->d_in, m->attn_scratch);
    } else {
        row_parallel_backward(&m->out, lc, sp, m->dz_loc, m->dz, m->d_cat, m->T);
        attention_backward(&ap, &drop, m->in_out, m->cat, m->d_cat, m->lse, m->d_in, m->attn_scratch);
    }
    gelu_backward_strided((char *)m->d_cat + hl * e, m->k_out, (char *)m->in_out + 3 * hl * e, m->n_in,
                          (char *)m->d_in + 3 * hl * e, m->n_in, m->T, m->fl, dt);
    // W_in's backward: LN's output gathered again beside the dgrad (SP_REGATHER; after the last
    // reader of dz: W_out's wgrad, or attention's backward under --recompute-gelu), the dgrad's all-reduce (reduce-scatter) beside the wgrad.
    // --recompute-layernorm: LN's output first, again from x (LayerNorm.saved_x) by the same
    // kernel - the same bits - into dz_loc, which nothing reads any more in this step.
    if (m->sched.recompute_layernorm) layernorm_forward(&m->ln, m->ln.saved_x, m->a_loc, m->Tl);
    column_parallel_backward(&m->in, lc, sp, regather ? REGATHER_HERE : REGATHER_NONE, m->a_loc, m->a, m->d_in, m->d_a,
                             m->d_a_loc, m->T, m->Tl);
    layernorm_backward(&m->ln, m->d_a_loc, dout, m->dx, m->Tl);  // + the residual's gradient
    // gamma, beta and b_out saw only this rank's tokens under SP: summed over the ranks
    replicated_grads_all_reduce_start(lc, sp, &m->ln, m->db_out, h, dt);  // joined by the step's end
}

void tp_parallel_layer_read_grads(const TpParallelLayer *m, LayerParams *grads) {
    TpFusedShard g;
    tp_fused_shard_alloc(&m->cfg, m->tp, &g);
    layernorm_read_grads(&m->ln, g.ln_weight, g.ln_bias);
    linear_read_grads(&m->in, g.w_in, g.b_in);
    linear_read_grads(&m->out, g.w_out, NULL);
    dev_download(g.b_out, m->db_out, m->cfg.hidden, m->cfg.dtype);
    tp_unfuse_shard_grads(&m->cfg, m->tp, &g, grads);
    tp_fused_shard_free(&g);
}
