// The whole layer on one tensor-parallel rank: see tp_layer.h.
#include "steps/07_tensor_parallel/tp_layer.h"

#include <string.h>

void tp_layer_init(TpLayer *l, const LayerConfig *c, int tp, int rank, const TpVariant *v, const TpSchedule *sched,
                   const LayerParams *shard) {
    const TpSchedule defaults = TP_SCHEDULE_DEFAULTS;
    if (!sched) sched = &defaults;
    memset(l, 0, sizeof *l);
    l->variant = *v;
    if (v->layer == TP_LAYER_PARALLEL) {
        tp_parallel_layer_init(&l->par, c, tp, rank, v->sequence_parallel, sched, shard);
    } else {
        tp_attention_init(&l->attn, c, tp, rank, v->sequence_parallel, sched, shard);
        tp_mlp_init(&l->mlp, c, tp, rank, v->sequence_parallel, sched, shard);
    }
}

void tp_layer_free(TpLayer *l) {
    if (l->variant.layer == TP_LAYER_PARALLEL) tp_parallel_layer_free(&l->par);
    else tp_attention_free(&l->attn), tp_mlp_free(&l->mlp);
}

void tp_layer_train_step(TpLayer *l, LayerComm *lc, const void *x, const void *dout, uint64_t step) {
    if (l->variant.layer == TP_LAYER_PARALLEL) {
        tp_parallel_layer_forward(&l->par, lc, x, step);
        tp_parallel_layer_backward(&l->par, lc, dout, step);
    } else {
        tp_attention_forward(&l->attn, lc, x, step);
        tp_mlp_forward(&l->mlp, lc, l->attn.y);
        tp_mlp_backward(&l->mlp, lc, dout);
        tp_attention_backward(&l->attn, lc, l->mlp.dx, step);
    }
    layer_join_side(lc);  // SP's gradient all-reduces: part of the step, done before the next writes
}

const void *tp_layer_output(const TpLayer *l) {
    return l->variant.layer == TP_LAYER_PARALLEL ? l->par.y : l->mlp.out;
}

const void *tp_layer_dx(const TpLayer *l) { return l->variant.layer == TP_LAYER_PARALLEL ? l->par.dx : l->attn.dx; }

void tp_layer_read_grads(const TpLayer *l, LayerParams *grads) {
    if (l->variant.layer == TP_LAYER_PARALLEL) {
        tp_parallel_layer_read_grads(&l->par, grads);
    } else {
        tp_attention_read_grads(&l->attn, grads);
        tp_mlp_read_grads(&l->mlp, grads);
    }
}

size_t tp_layer_activation_bytes(const TpLayer *l) {
    if (l->variant.layer == TP_LAYER_PARALLEL) return l->par.activation_bytes;
    return l->attn.activation_bytes + l->mlp.activation_bytes;
}
