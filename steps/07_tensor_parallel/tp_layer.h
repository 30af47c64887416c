// The whole layer on one tensor-parallel rank, in any of step 07's variants
// (reference/tp_layer_reference.h): the serial layer as its two halves (tp_attention.h,
// tp_mlp.h), or step 06's parallel layer (tp_parallel_layer.h); plain TP or sequence
// parallelism. x and the output gradient are the rank's tokens: [T/tp, h] under sequence
// parallelism, all [T, h] otherwise. sched (NULL: TP_SCHEDULE_DEFAULTS, layer_comm.h): under
// sequence parallelism whether backward gathers the LayerNorm outputs again (the default) or
// forward keeps them gathered; under plain TP the row-parallel forwards' all-reduce pipelined
// in row blocks or not.
#ifndef STEPS_07_TENSOR_PARALLEL_TP_LAYER_H
#define STEPS_07_TENSOR_PARALLEL_TP_LAYER_H

#include <stddef.h>
#include <stdint.h>

#include "common/core/layer.h"
#include "reference/tp_layer_reference.h"
#include "steps/07_tensor_parallel/layer_comm.h"
#include "steps/07_tensor_parallel/tp_attention.h"
#include "steps/07_tensor_parallel/tp_mlp.h"
#include "steps/07_tensor_parallel/tp_parallel_layer.h"

typedef struct {
    TpVariant variant;
    TpAttention attn;      // serial layer
    TpMlp mlp;             // serial layer
    TpParallelLayer par;   // parallel layer
} TpLayer;

// shard: rank `rank`'s parameters (tp_shard_params of the unsharded ones).
void tp_layer_init(TpLayer *l, const LayerConfig *cfg, int tp, int rank, const TpVariant *v, const TpSchedule *sched,
                   const LayerParams *shard);
void tp_layer_free(TpLayer *l);
// One training step: forward from x, backward from dout (both [Tl, h], device, cfg->dtype).
// Ends with the default stream waiting for every collective started on the side stream.
void tp_layer_train_step(TpLayer *l, LayerComm *lc, const void *x, const void *dout, uint64_t step);
const void *tp_layer_output(const TpLayer *l);  // [Tl, h]
const void *tp_layer_dx(const TpLayer *l);      // [Tl, h]
// Every gradient this rank holds, in shard shapes (grads allocated like tp_shard_params').
void tp_layer_read_grads(const TpLayer *l, LayerParams *grads);
// Bytes of the tensors forward keeps for backward, on this rank: the layer's input x (LN1's
// backward reads it) and every tensor the modules keep (the chapter lists them).
size_t tp_layer_activation_bytes(const TpLayer *l);

#endif  // STEPS_07_TENSOR_PARALLEL_TP_LAYER_H
