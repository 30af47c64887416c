// --check on every rank: see tp_check.h.
#include "steps/07_tensor_parallel/tp_check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/errors.h"
#include "common/core/tolerance.h"
#include "common/gpu/gpu.h"

int tp_check_layer_rank(const LayerConfig *c, int tp, int rank, const TpLayer *l, const LayerParams *full,
                        const LayerInputs *in, double *worst_out) {
    const TpVariant *v = &l->variant;
    const int64_t T = layer_tokens(c), Tl = v->sequence_parallel ? T / tp : T, n = Tl * c->hidden;
    const int64_t first = v->sequence_parallel ? rank * n : 0;  // the rank's tokens in [T, h]
    LayerResults ref;
    layer_results_alloc(c, &ref);
    tp_variant_reference(v)(c, full, in, 0, &ref);
    LayerParams want, got;  // the reference's gradients cut like the parameters; this rank's
    tp_shard_params(c, tp, rank, &ref.grad, &want);
    tp_shard_params(c, tp, rank, &ref.grad, &got);
    tp_layer_read_grads(l, &got);
    float *x = xmalloc((size_t)n * sizeof(float));
    const double tol = check_tolerance(c->dtype);
    dev_download(x, tp_layer_output(l), n, c->dtype);
    double e_out = rel_error(x, ref.out + first, n);
    dev_download(x, tp_layer_dx(l), n, c->dtype);
    double e_dx = rel_error(x, ref.dx + first, n);
    const char *tokens = v->sequence_parallel ? "(its tokens)" : "";
    printf("rank %d  %-24s rel. error %.2e %s%s\n", rank, "out", e_out, tokens, e_out > tol ? "  FAIL" : "");
    printf("rank %d  %-24s rel. error %.2e %s%s\n", rank, "dx", e_dx, tokens, e_dx > tol ? "  FAIL" : "");
    double worst = e_out > e_dx ? e_out : e_dx;
    for (int id = 0; id < NUM_PARAMS; id++) {
        double e = rel_error(got.tensor[id], want.tensor[id], tp_param_shard_numel(c, tp, id));
        printf("rank %d  d%-23s rel. error %.2e  (%s)%s\n", rank, PARAM_NAMES[id], e,
               tp_split_name(tp_param_split(id)), e > tol ? "  FAIL" : "");
        if (e > worst) worst = e;
    }
    const int passed = worst <= tol;
    printf("rank %d  check: %s, max relative error %.2e (%s, against the unsharded %s reference; tolerance %.0e)\n",
           rank, passed ? "CHECK PASSED" : "CHECK FAILED", worst, tp_variant_name(v),
           v->layer == TP_LAYER_PARALLEL ? "parallel" : "serial", tol);
    free(x);
    layer_params_free(&want), layer_params_free(&got);
    layer_results_free(&ref);
    *worst_out = worst;
    return passed;
}

int tp_check_block_rank(const LayerConfig *c, int tp, int rank, const TpBlockGpu *b, const TpBlock *p,
                        const float *x, const float *dout, double *worst_out) {
    const int64_t T = b->T, n = T * b->h;
    const int fl = b->fl, off = rank * fl;
    TpBlockResults sim, ref;
    tp_block_results_alloc(&sim, T, b->h, b->f);
    tp_block_results_alloc(&ref, T, b->h, b->f);
    tp_block_sim(p, x, dout, T, c->eps, tp, b->mode, &sim);
    tp_block_reference(p, x, dout, T, c->eps, &ref);
    TpBlock got;
    tp_block_alloc(&got, b->h, fl);
    tp_block_gpu_read_grads(b, &got);
    float *y = xmalloc((size_t)n * sizeof(float));
    float *want_w2 = xmalloc((size_t)b->h * fl * sizeof(float));
    for (int r = 0; r < b->h; r++)
        memcpy(want_w2 + (int64_t)r * fl, sim.grad.w2 + (int64_t)r * b->f + off, (size_t)fl * sizeof(float));
    const double tol = check_tolerance(b->dtype);
    dev_download(y, b->out, n, b->dtype);
    double e_out = rel_error(y, sim.out, n), e_out_unsharded = rel_error(y, ref.out, n);
    dev_download(y, b->dx, n, b->dtype);
    double errs[] = {
        e_out,
        rel_error(y, sim.dx, n),
        rel_error(got.w1, sim.grad.w1 + (int64_t)off * b->h, (int64_t)fl * b->h),
        rel_error(got.b1, sim.grad.b1 + off, fl),
        rel_error(got.w2, want_w2, (int64_t)b->h * fl),
        rel_error(got.gamma, sim.grad.gamma + off, fl),
        rel_error(got.beta, sim.grad.beta + off, fl),
        rel_error(got.b2, sim.grad.b2, b->h),
    };
    double worst = 0.0;
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) worst = errs[i] > worst ? errs[i] : worst;
    const int passed = worst <= tol;
    printf("rank %d  block (%s): vs the CPU simulation out %.1e dx %.1e dW1 %.1e db1 %.1e dW2 %.1e dgamma %.1e "
           "dbeta %.1e db2 %.1e -> check: %s; out vs the UNSHARDED block %.1e\n",
           rank, b->mode == TP_LN_EXACT ? "exact" : "shard-local", errs[0], errs[1], errs[2], errs[3], errs[4],
           errs[5], errs[6], errs[7], passed ? "CHECK PASSED" : "CHECK FAILED", e_out_unsharded);
    free(y), free(want_w2);
    tp_block_free(&got);
    tp_block_results_free(&sim), tp_block_results_free(&ref);
    *worst_out = worst;
    return passed;
}
