// A row-parallel Linear's forward with its all-reduce, optionally pipelined: see row_parallel.h.
#include "steps/07_tensor_parallel/row_parallel.h"

#include <stdio.h>

#include "common/core/errors.h"
#include "common/gpu/gpu.h"

void tp_require_valid_schedule(const LayerConfig *c, int tp, const TpVariant *v, const TpSchedule *sched) {
    const char *problem = tp_variant_problem(c, tp, v);
    if (problem) fail_user("%s", problem);
    if (v->sequence_parallel && sched->fprop_chunks != 1)
        fail_user("--fprop-chunks pipelines plain TP's forward all-reduce; sequence parallelism has a reduce-scatter there");
    problem = tp_schedule_problem(sched);
    if (problem) fail_user("%s", problem);
    problem = row_parallel_chunks_problem(layer_tokens(c), sched->fprop_chunks);
    if (problem) fail_user("%s", problem);
}

const char *row_parallel_chunks_problem(int64_t tokens, int chunks) {
    static char why[160];
    if (chunks < 1 || chunks > ROW_PARALLEL_MAX_CHUNKS) {
        snprintf(why, sizeof why, "--fprop-chunks %d: between 1 and %d", chunks, ROW_PARALLEL_MAX_CHUNKS);
        return why;
    }
    if (tokens % chunks != 0) {
        snprintf(why, sizeof why, "--fprop-chunks %d must divide the %lld tokens (seq * batch)", chunks,
                 (long long)tokens);
        return why;
    }
    return NULL;
}

void row_parallel_forward_all_reduce(Linear *l, LayerComm *lc, const void *x, void *partial, int64_t tokens,
                                     int chunks) {
    if (l->bias) DIE("row_parallel_forward_all_reduce: the bias is the caller's, added once after the sum");
    const char *problem = row_parallel_chunks_problem(tokens, chunks);
    if (problem) DIE("%s", problem);
    if (chunks == 1) {
        linear_forward(l, x, partial, tokens, NULL);
        layer_all_reduce(lc, partial, tokens * l->out, l->dtype);
        return;
    }
    const int64_t rows = tokens / chunks;
    const size_t e = dtype_bytes(l->dtype);
    for (int c = 0; c < chunks; c++) {
        const char *xc = (const char *)x + (size_t)(c * rows * l->in) * e;
        char *pc = (char *)partial + (size_t)(c * rows * l->out) * e;
        linear_forward(l, xc, pc, rows, NULL);              // block c's rows of the partial sum...
        layer_all_reduce_start(lc, pc, rows * l->out, l->dtype);  // ...summed while block c + 1 runs
    }
    l->saved_x = x;  // each block's forward recorded its own rows; the wgrad reads all T
    layer_wait_reduced(lc);  // the last block's sum (the side stream runs the blocks in order)
}
