// The pieces of one tensor-parallel region on one rank: see tp_region.h.
#include "steps/07_tensor_parallel/tp_region.h"

#include "common/core/philox.h"
#include "common/gpu/gpu.h"
#include "kernels/fused/bias_epilogue.h"
#include "kernels/fused/elementwise.h"
#include "steps/07_tensor_parallel/row_parallel.h"
#include "steps/07_tensor_parallel/sp_gather.h"

void *tp_activation_tensor(size_t *activation_bytes, int64_t rows, int64_t cols, DType dtype, int kept) {
    size_t bytes = (size_t)(rows * cols) * dtype_bytes(dtype);
    if (kept) *activation_bytes += bytes;
    return dev_alloc(bytes);
}

void column_parallel_forward(Linear *l, LayerComm *lc, int sequence_parallel, const void *x_loc, void *x, void *y,
                             int64_t tokens) {
    if (sequence_parallel) sp_gathered_gemm(l, SP_GEMM_FPROP, lc, x_loc, x, y, tokens);
    else linear_forward(l, x_loc, y, tokens, NULL);
}

void column_parallel_backward(Linear *l, LayerComm *lc, int sequence_parallel, RegatherInput regather_input,
                              const void *x_loc, void *x, const void *dy, void *dx_partial, void *dx_loc,
                              int64_t tokens, int64_t tokens_local) {
    const int64_t n_loc = tokens_local * l->in;
    if (regather_input == REGATHER_HERE) layer_all_gather_start(lc, x_loc, x, n_loc, l->dtype);
    linear_dgrad(l, dy, dx_partial, tokens);  // partial
    if (regather_input != REGATHER_NONE) {
        layer_wait_gathered(lc);
        linear_set_saved_input(l, x);  // the wgrad reads the gathered input
    }
    layer_leave_region(lc, sequence_parallel, dx_partial, dx_loc, n_loc, l->dtype, 1);  // started...
    linear_wgrad(l, dy, tokens, 1);  // ...while dW, db run (the input recorded in forward, or gathered again)
    layer_wait_reduced(lc);
}

void row_parallel_forward(Linear *l, LayerComm *lc, int sequence_parallel, const void *x, void *partial,
                          void *out_loc, int64_t tokens, int64_t tokens_local, int chunks) {
    if (sequence_parallel) {
        linear_forward(l, x, partial, tokens, NULL);
        layer_leave_region(lc, 1, partial, out_loc, tokens_local * l->out, l->dtype, 0);  // finished on return
    } else {
        row_parallel_forward_all_reduce(l, lc, x, partial, tokens, chunks);
    }
}

void row_parallel_dgrad(Linear *l, LayerComm *lc, int sequence_parallel, const void *dy_loc, void *dy, void *dx,
                        int64_t tokens) {
    if (sequence_parallel) sp_gathered_gemm(l, SP_GEMM_DGRAD, lc, dy_loc, dy, dx, tokens);
    else linear_dgrad(l, dy_loc, dx, tokens);
}

void row_parallel_wgrad(Linear *l, int sequence_parallel, const void *dy_loc, const void *dy, int64_t tokens) {
    linear_wgrad(l, sequence_parallel ? dy : dy_loc, tokens, 0);  // this rank's dW shard (no bias: bias_grad 0)
}

void row_parallel_backward(Linear *l, LayerComm *lc, int sequence_parallel, const void *dy_loc, void *dy, void *dx,
                           int64_t tokens) {
    row_parallel_dgrad(l, lc, sequence_parallel, dy_loc, dy, dx, tokens);
    row_parallel_wgrad(l, sequence_parallel, dy_loc, dy, tokens);
}

void row_parallel_backward_recomputing_input(Linear *l, LayerComm *lc, int sequence_parallel, const void *dy_loc,
                                             void *dy, void *dx, int64_t tokens, int64_t tokens_local,
                                             void (*recompute_input)(void *module), void *module) {
    if (sequence_parallel) layer_all_gather_start(lc, dy_loc, dy, tokens_local * l->out, l->dtype);
    recompute_input(module);  // beside the all-gather
    if (sequence_parallel) layer_wait_gathered(lc);
    linear_wgrad(l, sequence_parallel ? dy : dy_loc, tokens, 0);  // this rank's dW shard (no bias: bias_grad 0)
    if (sequence_parallel) sp_gemm_in_row_blocks(l, SP_GEMM_DGRAD, lc, dy_loc, dy, dx, tokens);
    else linear_dgrad(l, dy_loc, dx, tokens);
}

void replicated_grads_all_reduce_start(LayerComm *lc, int sequence_parallel, LayerNorm *ln, void *d_bias, int hidden,
                                       DType dtype) {
    if (!sequence_parallel) return;
    void *grads[] = {ln->dgamma, ln->dbeta, d_bias};
    const int64_t n[] = {hidden, hidden, hidden};
    layer_all_reduce_group_start(lc, grads, n, 3, dtype);
}

void hidden_bias_dropout_add_forward(const LayerConfig *c, uint64_t step, int sequence_parallel, int rank,
                                     int64_t tokens_local, const void *out_loc, const void *bias, const void *x,
                                     void *y) {
    const uint64_t first = sp_first_element(sequence_parallel, rank, tokens_local, c->hidden);
    bias_dropout_add_forward_at(out_loc, bias, x, y, tokens_local, c->hidden, c->hidden_dropout, c->seed,
                                dropout_offset(step, DROPOUT_SITE_HIDDEN), first, c->dtype);
}

void hidden_bias_dropout_backward(const LayerConfig *c, uint64_t step, int sequence_parallel, int rank,
                                  int64_t tokens_local, const void *dy, void *d_out_loc, void *d_bias,
                                  void *workspace) {
    const uint64_t first = sp_first_element(sequence_parallel, rank, tokens_local, c->hidden);
    add_dropout_backward_at(dy, NULL, NULL, d_out_loc, tokens_local * c->hidden, c->hidden_dropout, c->seed,
                            dropout_offset(step, DROPOUT_SITE_HIDDEN), first, c->dtype);
    bias_grad_columns(d_out_loc, tokens_local, c->hidden, d_bias, workspace, c->dtype);  // SP: the rank's tokens only
}
