// The serial layer's MLP half on one tensor-parallel rank: see tp_mlp.h.
#include "steps/07_tensor_parallel/tp_mlp.h"

#include <string.h>

#include "common/core/errors.h"
#include "common/gpu/gpu.h"
#include "kernels/fused/elementwise.h"
#include "kernels/fused/bias_epilogue.h"
#include "reference/tp_layer_reference.h"
#include "steps/07_tensor_parallel/row_parallel.h"
#include "steps/07_tensor_parallel/tp_region.h"

static void *tensor(TpMlp *m, int64_t rows, int64_t cols, int kept) {
    return tp_activation_tensor(&m->activation_bytes, rows, cols, m->cfg.dtype, kept);
}

void tp_mlp_init(TpMlp *m, const LayerConfig *c, int tp, int rank, int sequence_parallel, const TpSchedule *sched,
                 const LayerParams *shard) {
    memset(m, 0, sizeof *m);
    // The variant, for the schedule's check only: recomputation is the schedule's (sched).
    const TpVariant v = {.layer = TP_LAYER_SERIAL, .sequence_parallel = sequence_parallel};
    tp_require_valid_schedule(c, tp, &v, sched);
    m->cfg = *c;
    m->tp = tp, m->rank = rank, m->sequence_parallel = sequence_parallel, m->sched = *sched;
    m->fl = c->ffn / tp, m->T = layer_tokens(c), m->Tl = sequence_parallel ? m->T / tp : m->T;
    const int h = c->hidden;
    const int64_t T = m->T, Tl = m->Tl;
    const int keep_gathered = sequence_parallel && sched->sp_input == SP_KEEP_GATHERED;
    float *const *w = shard->tensor;
    layernorm_init(&m->ln2, h, Tl, c->eps, w[P_LN2_WEIGHT], w[P_LN2_BIAS], c->dtype);
    linear_init(&m->fc1, h, m->fl, w[P_FC1_WEIGHT], w[P_FC1_BIAS], c->dtype);
    linear_init(&m->fc2, m->fl, h, w[P_FC2_WEIGHT], NULL, c->dtype);
    m->b2 = dev_upload(w[P_FC2_BIAS], h, c->dtype);
    m->db2 = dev_alloc((size_t)h * dtype_bytes(c->dtype));
    m->db_workspace = dev_alloc(bias_grad_workspace_bytes(h));
    m->activation_bytes += 2 * (size_t)Tl * sizeof(float);  // LN2's mean and rstd
    m->dx = tensor(m, Tl, h, 0);
    // LN2's output: kept, or (--recompute-layernorm) written into dx, which backward writes only
    // at its end (LN2's backward), and computed there again in backward for FC1's wgrad.
    m->ln_loc = sched->recompute_layernorm ? m->dx : tensor(m, Tl, h, 1);
    // FC1's input: under SP kept for its wgrad only with SP_KEEP_GATHERED (else gathered again).
    m->ln = sequence_parallel ? tensor(m, T, h, keep_gathered) : m->ln_loc;
    m->fc1_out = tensor(m, T, m->fl, 1);                         // GELU's input
    m->d_act = tensor(m, T, m->fl, 0);
    // FC2's input, GELU's output: kept for FC2's wgrad, or (--recompute-gelu) written into the
    // backward's d_act, which forward does not use, and computed again in backward over FC1's
    // output (tp_mlp_backward).
    m->act = sched->recompute_gelu ? m->d_act : tensor(m, T, m->fl, 1);
    m->fc2_out = tensor(m, T, h, 0);
    m->out = sequence_parallel ? tensor(m, Tl, h, 0) : m->fc2_out;  // the sum lands in place
    m->dout_gathered = !sequence_parallel ? NULL : keep_gathered ? tensor(m, T, h, 0) : m->ln;
    m->d_ln = tensor(m, T, h, 0);
    m->d_ln_loc = sequence_parallel ? tensor(m, Tl, h, 0) : m->d_ln;
}

void tp_mlp_free(TpMlp *m) {
    layernorm_free(&m->ln2), linear_free(&m->fc1), linear_free(&m->fc2);
    if (m->ln_loc != m->dx) dev_free(m->ln_loc);
    void *bufs[] = {m->b2, m->db2, m->db_workspace, m->fc1_out, m->fc2_out, m->d_act, m->d_ln, m->dx};
    dev_free_all(bufs, COUNT_OF(bufs));
    if (m->act != m->d_act) dev_free(m->act);
    if (m->sequence_parallel) {
        void *sp[] = {m->ln, m->out, m->d_ln_loc};
        dev_free_all(sp, COUNT_OF(sp));
        if (m->dout_gathered != m->ln) dev_free(m->dout_gathered);
    }
    memset(m, 0, sizeof *m);
}

void tp_mlp_forward(TpMlp *m, LayerComm *lc, const void *y) {
    const DType dt = m->cfg.dtype;
    const int h = m->cfg.hidden, sp = m->sequence_parallel;
    layernorm_forward(&m->ln2, y, m->ln_loc, m->Tl);  // the rank's tokens
    // Column-parallel: [T, f/tp] from all T tokens (SP: gathered beside the GEMM on the rank's own)
    column_parallel_forward(&m->fc1, lc, sp, m->ln_loc, m->ln, m->fc1_out, m->T);
    gelu_forward_strided(m->fc1_out, m->fl, m->act, m->fl, m->T, m->fl, dt);
    // Row-parallel: a partial [T, h], summed over the ranks (plain TP: optionally in row blocks).
    row_parallel_forward(&m->fc2, lc, sp, m->act, m->fc2_out, m->out, m->T, m->Tl, m->sched.fprop_chunks);
    // The bias once (not tp times) and the residual, in one pass (dropout 0: FC2 has none; so
    // the dropout seed and offset, the two zeros after it, are unused).
    bias_dropout_add_forward(m->out, m->b2, y, m->out, m->Tl, h, 0.0f, 0, 0, dt);
}

void tp_mlp_backward(TpMlp *m, LayerComm *lc, const void *dout) {
    const DType dt = m->cfg.dtype;
    const int h = m->cfg.hidden, sp = m->sequence_parallel;
    const int regather = sp && m->sched.sp_input == SP_REGATHER;
    bias_grad_columns(dout, m->Tl, h, m->db2, m->db_workspace, dt);  // SP: over the rank's tokens only
    // FC2's dgrad (tp_region.h): under SP the output gradient dout [Tl, h] is gathered into
    // m->dout_gathered [T, h] (under SP_REGATHER the buffer that held LN2's gathered output in
    // forward) beside the dgrad of the rank's own rows.
    row_parallel_dgrad(&m->fc2, lc, sp, dout, m->dout_gathered, m->d_act, m->T);
    // --recompute-layernorm: LN2's output again, from y (LayerNorm.saved_x) by the same kernel into
    // ln_loc (the MLP's dx, which LN2's backward writes only at the end): the same bits.
    if (m->sched.recompute_layernorm) layernorm_forward(&m->ln2, m->ln2.saved_x, m->ln_loc, m->Tl);
    // SP_REGATHER: FC1's wgrad needs LN2's output of all T tokens again. Its all-gather starts
    // now, into fc2_out (forward's partial [T, h], which holds nothing in backward; the buffer
    // LN2's output was gathered into in forward holds dout_gathered, which FC2's wgrad still
    // reads), so that it runs beside GELU's backward and FC2's wgrad; FC1's wgrad waits for it.
    // (Started beside FC1's dgrad only - Megatron-LM's place, and this step's before the
    // thirteenth session - the step took 0.5-1.5% longer with the recomputations and about as
    // long without them: docs/results.md#h200-thirteenth.)
    if (regather) layer_all_gather_start(lc, m->ln_loc, m->fc2_out, m->Tl * h, dt);
    if (m->sched.recompute_gelu) {
        // --recompute-gelu: forward kept FC1's output, not GELU's. GELU's backward, the last reader
        // of FC1's output, also writes GELU's output again over it (the same device function on
        // the same input as forward: the same bits), and FC2's wgrad reads it there.
        gelu_backward_recomputing_strided(m->d_act, m->fl, m->fc1_out, m->fl, m->d_act, m->fl, m->fc1_out, m->fl,
                                          m->T, m->fl, dt);
        linear_set_saved_input(&m->fc2, m->fc1_out);
        row_parallel_wgrad(&m->fc2, sp, dout, m->dout_gathered, m->T);  // + dW2 shard
    } else {
        row_parallel_wgrad(&m->fc2, sp, dout, m->dout_gathered, m->T);  // + dW2 shard
        gelu_backward_strided(m->d_act, m->fl, m->fc1_out, m->fl, m->d_act, m->fl, m->T, m->fl, dt);  // in place
    }
    // FC1's backward: the dgrad, its all-reduce (reduce-scatter) beside the wgrad, which reads
    // LN2's output (plain TP: kept or recomputed in ln_loc; SP: gathered, above, or kept gathered).
    column_parallel_backward(&m->fc1, lc, sp, regather ? REGATHER_STARTED : REGATHER_NONE, m->ln_loc,
                             regather ? m->fc2_out : m->ln, m->d_act, m->d_ln, m->d_ln_loc, m->T, m->Tl);
    layernorm_backward(&m->ln2, m->d_ln_loc, dout, m->dx, m->Tl);  // + the residual's gradient
    // gamma, beta and b2 saw only this rank's tokens under SP: summed over the ranks, beside the
    // attention half's backward (nothing in this step reads them again)
    replicated_grads_all_reduce_start(lc, sp, &m->ln2, m->db2, h, dt);
}

void tp_mlp_read_grads(const TpMlp *m, LayerParams *grads) {
    float **g = grads->tensor;
    layernorm_read_grads(&m->ln2, g[P_LN2_WEIGHT], g[P_LN2_BIAS]);
    linear_read_grads(&m->fc1, g[P_FC1_WEIGHT], g[P_FC1_BIAS]);
    linear_read_grads(&m->fc2, g[P_FC2_WEIGHT], NULL);
    dev_download(g[P_FC2_BIAS], m->db2, m->cfg.hidden, m->cfg.dtype);
}
