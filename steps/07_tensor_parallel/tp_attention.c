// The serial layer's attention half on one tensor-parallel rank: see tp_attention.h.
#include "steps/07_tensor_parallel/tp_attention.h"

#include <string.h>

#include "common/core/errors.h"
#include "common/gpu/gpu.h"
#include "kernels/attention/attention.h"
#include "kernels/fused/bias_epilogue.h"
#include "modules/gemm.h"
#include "reference/tp_layer_reference.h"
#include "steps/07_tensor_parallel/row_parallel.h"
#include "steps/07_tensor_parallel/tp_region.h"

// A device tensor of `rows` x `cols` in the layer's dtype, counted as activation memory when
// forward keeps it for backward.
static void *tensor(TpAttention *m, int64_t rows, int64_t cols, int kept) {
    return tp_activation_tensor(&m->activation_bytes, rows, cols, m->cfg.dtype, kept);
}

// This rank's heads, [first_head, first_head + heads_local) of the layer's: the dropout mask is
// the unsharded layer's.
static AttentionProblem attention_problem(const TpAttention *m) {
    AttentionProblem p = attention_layer_problem(&m->cfg);
    p.heads = m->heads_local, p.total_heads = m->cfg.heads, p.first_head = m->first_head;
    return p;
}

void tp_attention_init(TpAttention *m, const LayerConfig *c, int tp, int rank, int sequence_parallel,
                       const TpSchedule *sched, const LayerParams *shard) {
    memset(m, 0, sizeof *m);
    // The variant, for the schedule's check only: recomputation is the schedule's (sched).
    const TpVariant v = {.layer = TP_LAYER_SERIAL, .sequence_parallel = sequence_parallel};
    tp_require_valid_schedule(c, tp, &v, sched);
    m->cfg = *c;
    m->tp = tp, m->rank = rank, m->sequence_parallel = sequence_parallel, m->sched = *sched;
    m->heads_local = c->heads / tp, m->first_head = rank * m->heads_local, m->hl = c->hidden / tp;
    const AttentionProblem ap = attention_problem(m);
    const char *why = attention_unsupported(&ap);
    if (why) fail_user("step 07: %s", why);
    m->T = layer_tokens(c), m->Tl = sequence_parallel ? m->T / tp : m->T;
    const int h = c->hidden;
    const int64_t T = m->T, Tl = m->Tl;
    const int keep_gathered = sequence_parallel && sched->sp_input == SP_KEEP_GATHERED;
    float *const *w = shard->tensor;
    layernorm_init(&m->ln1, h, Tl, c->eps, w[P_LN1_WEIGHT], w[P_LN1_BIAS], c->dtype);
    linear_init(&m->qkv, h, 3 * m->hl, w[P_QKV_WEIGHT], w[P_QKV_BIAS], c->dtype);
    linear_init(&m->proj, m->hl, h, w[P_PROJ_WEIGHT], NULL, c->dtype);
    m->b_proj = dev_upload(w[P_PROJ_BIAS], h, c->dtype);
    m->db_proj = dev_alloc((size_t)h * dtype_bytes(c->dtype));
    m->db_workspace = dev_alloc(bias_grad_workspace_bytes(h));
    // What LN1's backward reads and did not allocate here: the layer's input x (the caller's
    // buffer, LayerNorm.saved_x) and the per-row mean and rstd (fp32).
    m->activation_bytes += (size_t)(Tl * h) * dtype_bytes(c->dtype) + 2 * (size_t)Tl * sizeof(float);
    // Backward's [Tl, h] output gradient first: under --recompute-layernorm LN1's output lives in it.
    m->d_proj_loc = tensor(m, Tl, h, 0);
    // Forward's tensors; under plain TP the rank's slice is the whole, one buffer for both.
    // --recompute-layernorm: LN1's output is not kept; it goes into d_proj_loc, which forward
    // does not use, and backward computes it there again (after Proj's backward, its last reader).
    m->ln_loc = sched->recompute_layernorm ? m->d_proj_loc : tensor(m, Tl, h, 1);
    // QKV's input. SP: kept for its wgrad only under SP_KEEP_GATHERED; otherwise a buffer the
    // backward gathers into again (so not an activation: a layer stack would share it).
    m->ln = sequence_parallel ? tensor(m, T, h, keep_gathered) : m->ln_loc;
    m->qkv_out = tensor(m, T, 3 * m->hl, 1);
    m->ctx = tensor(m, T, m->hl, 1);
    m->lse = dev_alloc((size_t)c->batch * m->heads_local * c->seq * sizeof(float));
    m->activation_bytes += (size_t)c->batch * m->heads_local * c->seq * sizeof(float);
    m->proj_out = tensor(m, T, h, 0);
    m->proj_loc = sequence_parallel ? tensor(m, Tl, h, 0) : m->proj_out;
    m->y = tensor(m, Tl, h, 1);  // LN2's input, kept for its backward
    // Backward's (d_proj_loc above).
    m->d_proj = !sequence_parallel ? m->d_proj_loc : keep_gathered ? tensor(m, T, h, 0) : m->ln;
    m->d_ctx = tensor(m, T, m->hl, 0);
    m->d_qkv = tensor(m, T, 3 * m->hl, 0);
    m->d_ln = tensor(m, T, h, 0);
    m->d_ln_loc = sequence_parallel ? tensor(m, Tl, h, 0) : m->d_ln;
    m->dx = tensor(m, Tl, h, 0);
    m->attn_scratch = dev_alloc(attention_backward_workspace_bytes(&ap));
}

void tp_attention_free(TpAttention *m) {
    layernorm_free(&m->ln1), linear_free(&m->qkv), linear_free(&m->proj);
    if (m->ln_loc != m->d_proj_loc) dev_free(m->ln_loc);
    void *bufs[] = {m->b_proj, m->db_proj, m->db_workspace, m->qkv_out, m->ctx, m->lse, m->proj_out, m->y,
                    m->d_proj_loc, m->d_ctx, m->d_qkv, m->d_ln, m->dx, m->attn_scratch};
    dev_free_all(bufs, COUNT_OF(bufs));
    if (m->sequence_parallel) {  // the slices' own buffers
        void *sp[] = {m->ln, m->proj_loc, m->d_ln_loc};
        dev_free_all(sp, COUNT_OF(sp));
        if (m->d_proj != m->ln) dev_free(m->d_proj);
    }
    memset(m, 0, sizeof *m);
}

// y = x + dropout(sum_r ctx_r W_proj[:, r]^T + b_proj)
void tp_attention_forward(TpAttention *m, LayerComm *lc, const void *x, uint64_t step) {
    const LayerConfig *c = &m->cfg;
    const int sp = m->sequence_parallel;
    layernorm_forward(&m->ln1, x, m->ln_loc, m->Tl);  // the rank's tokens
    // Column-parallel: [T, 3h/tp] from all T tokens (SP: gathered beside the GEMM on the rank's own)
    column_parallel_forward(&m->qkv, lc, sp, m->ln_loc, m->ln, m->qkv_out, m->T);
    const AttentionProblem ap = attention_problem(m);
    const AttentionDropout drop = attention_layer_dropout(c, step);
    attention_forward(&ap, &drop, m->qkv_out, m->ctx, m->lse);  // this rank's heads
    // Row-parallel: a partial [T, h], summed over the ranks (plain TP: optionally in row blocks,
    // each block's all-reduce beside the next block's GEMM, row_parallel.h).
    row_parallel_forward(&m->proj, lc, sp, m->ctx, m->proj_out, m->proj_loc, m->T, m->Tl, m->sched.fprop_chunks);
    // The bias once, and the unsharded layer's dropout mask on the rank's tokens.
    hidden_bias_dropout_add_forward(c, step, sp, m->rank, m->Tl, m->proj_loc, m->b_proj, x, m->y);
}

void tp_attention_backward(TpAttention *m, LayerComm *lc, const void *dy, uint64_t step) {
    const LayerConfig *c = &m->cfg;
    const int h = c->hidden, sp = m->sequence_parallel;
    const int regather = sp && m->sched.sp_input == SP_REGATHER;
    hidden_bias_dropout_backward(c, step, sp, m->rank, m->Tl, dy, m->d_proj_loc, m->db_proj, m->db_workspace);
    // Proj's dgrad (local) from the output gradient of all T tokens: SP gathers it into d_proj
    // (under SP_REGATHER the buffer that held LN1's gathered output in forward) beside the
    // dgrad of the rank's own tokens. Plain TP: d_proj is d_proj_loc.
    row_parallel_backward(&m->proj, lc, sp, m->d_proj_loc, m->d_proj, m->d_ctx, m->T);  // + dW_proj shard
    // --recompute-layernorm: LN1's output again, from x (LayerNorm.saved_x) by the same kernel
    // into ln_loc (d_proj_loc, whose last reader was the proj backward above): the same bits, and
    // the same mean and rstd written over themselves.
    if (m->sched.recompute_layernorm) layernorm_forward(&m->ln1, m->ln1.saved_x, m->ln_loc, m->Tl);
    // SP_REGATHER: QKV's wgrad needs LN1's output of all T tokens again. Its all-gather starts now,
    // into m->ln (free again: the proj wgrad above was the last reader of d_proj, which shares
    // it), so that it runs beside attention's backward; QKV's wgrad waits for it. (Started beside
    // QKV's dgrad only - Megatron-LM's place, and this step's before the thirteenth session -
    // the step took 0.5-1.5% longer with the recomputations and about as long without them:
    // docs/results.md#h200-thirteenth.)
    if (regather) layer_all_gather_start(lc, m->ln_loc, m->ln, m->Tl * h, c->dtype);
    const AttentionProblem ap = attention_problem(m);
    const AttentionDropout drop = attention_layer_dropout(c, step);
    attention_backward(&ap, &drop, m->qkv_out, m->ctx, m->d_ctx, m->lse, m->d_qkv, m->attn_scratch);
    // QKV's backward: dgrad first, its all-reduce (reduce-scatter) started at once, the wgrad
    // beside it.
    column_parallel_backward(&m->qkv, lc, sp, regather ? REGATHER_STARTED : REGATHER_NONE, m->ln_loc, m->ln, m->d_qkv,
                             m->d_ln, m->d_ln_loc, m->T, m->Tl);
    layernorm_backward(&m->ln1, m->d_ln_loc, dy, m->dx, m->Tl);  // + the residual's gradient
    // gamma, beta and b_proj saw only this rank's tokens under SP: summed over the ranks
    replicated_grads_all_reduce_start(lc, sp, &m->ln1, m->db_proj, h, c->dtype);  // joined by the step's end
}

void tp_attention_read_grads(const TpAttention *m, LayerParams *grads) {
    float **g = grads->tensor;
    layernorm_read_grads(&m->ln1, g[P_LN1_WEIGHT], g[P_LN1_BIAS]);
    linear_read_grads(&m->qkv, g[P_QKV_WEIGHT], g[P_QKV_BIAS]);
    linear_read_grads(&m->proj, g[P_PROJ_WEIGHT], NULL);
    dev_download(g[P_PROJ_BIAS], m->db_proj, m->cfg.hidden, m->cfg.dtype);
}
