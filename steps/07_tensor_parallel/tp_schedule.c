// What step 07's layer keeps for backward, per rank: see tp_schedule.h.
#include "steps/07_tensor_parallel/tp_schedule.h"

#include <stdint.h>

size_t tp_kept_activation_bytes(const LayerConfig *c, int tp, const TpVariant *v, const TpSchedule *sched) {
    const TpSchedule defaults = TP_SCHEDULE_DEFAULTS;
    if (!sched) sched = &defaults;
    const int sp = v->sequence_parallel;
    const int64_t T = layer_tokens(c), Tl = sp ? T / tp : T, h = c->hidden, hl = h / tp, fl = c->ffn / tp;
    const int64_t e = 2;  // bytes per element: fp16 and bf16 alike (dtype_bytes, common/gpu/gpu.h)
    const int64_t gathered = sp && sched->sp_input == SP_KEEP_GATHERED ? T * h : 0;  // per LayerNorm
    const int64_t ln_out = (sched->recompute_layernorm ? 0 : Tl * h) + gathered;     // per LayerNorm
    const int64_t ln_stats = 2 * Tl * (int64_t)sizeof(float);                        // mean, rstd
    const int64_t lse = (int64_t)c->batch * (c->heads / tp) * c->seq * (int64_t)sizeof(float);
    int64_t elems, extra;  // tensors in c->dtype (elements); fp32 bytes
    if (v->layer == TP_LAYER_PARALLEL) {
        const int64_t n_in = 3 * hl + fl;
        const int64_t cat = sched->recompute_gelu ? hl : hl + fl;  // [ctx | g], or ctx alone
        elems = Tl * h /* x */ + ln_out + T * n_in + T * cat;
        extra = ln_stats + lse;
    } else {
        const int64_t attention = Tl * h /* x */ + ln_out /* LN1's */ + T * 3 * hl + T * hl /* ctx */ +
                                  Tl * h /* y */;
        const int64_t mlp = ln_out /* LN2's */ + T * fl /* FC1's */ +
                            (sched->recompute_gelu ? 0 : T * fl) /* GELU's */;
        elems = attention + mlp;
        extra = 2 * ln_stats + lse;
    }
    return (size_t)(elems * e + extra);
}

const char *tp_schedule_problem(const TpSchedule *sched) {
    if (sched->recompute_layernorm && sched->sp_input == SP_KEEP_GATHERED)
        return "--recompute-layernorm computes the LayerNorm outputs again in backward; --keep-gathered keeps "
               "them (gathered): drop one of them";
    return NULL;
}
