// The pieces of one tensor-parallel region on one rank, written once for the three modules
// built of it (tp_attention, tp_mlp, tp_parallel_layer). Each module is the same region:
//
//   LN (replicated) -> column-parallel Linear -> local work -> row-parallel Linear -> + bias ...
//   (QKV, FC1, W_in)                              (attention,   (Proj, FC2, W_out)
//                                                  GELU)
//
// and differs only in its local work and its buffers. Megatron-LM's ColumnParallelLinear and
// RowParallelLinear, in both modes:
//
//   plain TP:              every rank holds all T tokens; the row-parallel output's partial
//                          sums are all-reduced in place (the *_loc tensors ARE the whole ones);
//   sequence parallelism:  every rank holds its slice of Tl = T/tp tokens outside the region;
//                          an all-gather enters it (sp_gather.h, beside the GEMM on the rank's
//                          own rows), a reduce-scatter leaves it (layer_comm.h).
//
// Every rank calls these functions in the same order, so NCCL sees the same collectives in the
// same order on every rank - which it requires (a rank calling another collective first would
// wait forever for its peers). Backward goes through the region in reverse: the column-parallel
// Linear's dgrad is where the gradient leaves it (its all-reduce, or reduce-scatter under SP).
// Shapes: T tokens, Tl tokens of the rank's slice (T/tp under SP, else T); tensors in the
// Linear's dtype (the layer's); sizes in elements. No bias here on a row-parallel Linear: the
// caller adds it once, after the sum.
#ifndef STEPS_07_TENSOR_PARALLEL_TP_REGION_H
#define STEPS_07_TENSOR_PARALLEL_TP_REGION_H

#include <stddef.h>
#include <stdint.h>

#include "common/core/layer.h"
#include "modules/layernorm.h"
#include "modules/linear.h"
#include "steps/07_tensor_parallel/layer_comm.h"

// A device tensor of rows x cols in dtype (dev_alloc). kept: forward keeps it for backward, so
// its bytes are added to *activation_bytes (the module's activation memory).
void *tp_activation_tensor(size_t *activation_bytes, int64_t rows, int64_t cols, DType dtype, int kept);

// A column-parallel Linear's forward on all T tokens: y [T, l->out] = x [T, l->in] W^T + b.
// SP: x_loc [Tl, l->in] is the rank's slice, gathered into x [T, l->in] beside the GEMM on the
// rank's own rows (sp_gathered_gemm). Plain TP: x_loc is the whole input (x unused, may be it).
// Afterwards the Linear's wgrad reads the whole input (x under SP, x_loc under plain TP).
void column_parallel_forward(Linear *l, LayerComm *lc, int sequence_parallel, const void *x_loc, void *x, void *y,
                             int64_t tokens);

// A column-parallel Linear's backward, leaving the region: from dy [T, l->out] (the gradient at
// its output, this rank's columns) to the gradient at its input, summed over the ranks.
//   regather_input (SP_REGATHER under SP, tp_schedule.h): REGATHER_HERE: the input gathered
//     again, x_loc [Tl, l->in] -> x [T, l->in], beside the dgrad (forward kept only the slice);
//     REGATHER_STARTED: the caller started that all-gather into x earlier
//     (layer_all_gather_start); either way the wgrad waits for it and reads x.
//     REGATHER_NONE: the wgrad reads the input recorded in forward (plain TP, SP_KEEP_GATHERED)
//   dgrad: the partial [T, l->in] into dx_partial; its all-reduce (plain TP: in place,
//     dx_loc == dx_partial) or reduce-scatter (SP: into dx_loc [Tl, l->in]) STARTED, and the
//     wgrad (weight and bias) beside it; then the default stream waits for the sum.
// tokens_local: Tl.
typedef enum { REGATHER_NONE = 0, REGATHER_HERE = 1, REGATHER_STARTED = 2 } RegatherInput;
void column_parallel_backward(Linear *l, LayerComm *lc, int sequence_parallel, RegatherInput regather_input,
                              const void *x_loc, void *x, const void *dy, void *dx_partial, void *dx_loc,
                              int64_t tokens, int64_t tokens_local);

// A row-parallel Linear's forward, leaving the region: partial [T, l->out] = x [T, l->in] W^T,
// summed over the ranks.
//   plain TP: in place in partial (out_loc must be partial), in `chunks` row blocks with the
//     all-reduces pipelined behind the GEMM (row_parallel_forward_all_reduce);
//   SP: one GEMM, then the reduce-scatter (in line) into the rank's slice out_loc [Tl, l->out].
void row_parallel_forward(Linear *l, LayerComm *lc, int sequence_parallel, const void *x, void *partial,
                          void *out_loc, int64_t tokens, int64_t tokens_local, int chunks);

// A row-parallel Linear's backward, its input kept from forward: from dy_loc [Tl, l->out], the
// gradient at the summed output, to dx [T, l->in] (local: the input was this rank's columns).
// The dgrad from the output gradient of all T tokens - SP gathers it into dy [T, l->out] beside
// the dgrad of the rank's own rows (sp_gathered_gemm); plain TP reads dy_loc, which is all of
// it (dy unused) - then the wgrad from the same whole gradient.
void row_parallel_backward(Linear *l, LayerComm *lc, int sequence_parallel, const void *dy_loc, void *dy, void *dx,
                           int64_t tokens);
// Its two halves apart, for a caller that runs something between them (the serial MLP under
// --recompute-gelu computes FC2's input again there): row_parallel_dgrad writes dx (under SP
// leaving the gathered gradient in dy), row_parallel_wgrad then reads that gradient and the
// Linear's saved input. row_parallel_backward is the one, then the other.
void row_parallel_dgrad(Linear *l, LayerComm *lc, int sequence_parallel, const void *dy_loc, void *dy, void *dx,
                        int64_t tokens);
void row_parallel_wgrad(Linear *l, int sequence_parallel, const void *dy_loc, const void *dy, int64_t tokens);

// The same backward when forward did not keep the Linear's input and it must be put together
// again in the buffer the dgrad writes (the parallel layer's [ctx | g] under --recompute-gelu):
// the input is put together again by recompute_input(module) into the buffer forward had it in (the
// input the Linear recorded), then the wgrad reads it, and only then the dgrad writes dx - which
// may be that same buffer. Under SP the output gradient's all-gather runs beside the
// recomputation, and the dgrad takes sp_gathered_gemm's row blocks (sp_gemm_in_row_blocks: the
// same bits as row_parallel_backward's). tokens_local: Tl.
void row_parallel_backward_recomputing_input(Linear *l, LayerComm *lc, int sequence_parallel, const void *dy_loc,
                                             void *dy, void *dx, int64_t tokens, int64_t tokens_local,
                                             void (*recompute_input)(void *module), void *module);

// The region's replicated parameters under SP: LN's gamma, beta and the row-parallel Linear's
// bias (d_bias [hidden]) saw only this rank's tokens, so their gradients are partial sums: all
// three all-reduced in one NCCL group, STARTED (joined by layer_join_side at the step's end;
// nothing in the step reads them before). Plain TP: nothing (every rank summed all T tokens).
void replicated_grads_all_reduce_start(LayerComm *lc, int sequence_parallel, LayerNorm *ln, void *d_bias, int hidden,
                                       DType dtype);

// The region's output where a dropout follows it (the attention half, the parallel layer):
// y [Tl, h] = x + Dropout(out_loc + bias), out_loc [Tl, h] the summed row-parallel output, the
// bias [h] (replicated) added once, after the sum. The hidden dropout's mask is the unsharded
// layer's on this rank's tokens: Philox by element index from the rank's first token
// (sp_first_element), keyed by step and DROPOUT_SITE_HIDDEN. h = c->hidden, dtype c->dtype.
void hidden_bias_dropout_add_forward(const LayerConfig *c, uint64_t step, int sequence_parallel, int rank,
                                     int64_t tokens_local, const void *out_loc, const void *bias, const void *x,
                                     void *y);

// Its backward from dy [Tl, h], the gradient at y: d_out_loc [Tl, h] = dy through the same
// mask, and d_bias [h] = its column sums over this rank's tokens (under SP a partial sum:
// replicated_grads_all_reduce_start). workspace: bias_grad_columns' (bias_epilogue.h).
void hidden_bias_dropout_backward(const LayerConfig *c, uint64_t step, int sequence_parallel, int rank,
                                  int64_t tokens_local, const void *dy, void *d_out_loc, void *d_bias,
                                  void *workspace);

#endif  // STEPS_07_TENSOR_PARALLEL_TP_REGION_H
