// Step 07's modules (tp_attention, tp_mlp, tp_parallel_layer through tp_layer) on ONE GPU, as
// the single rank of tp = 1, in every variant (serial or parallel layer, plain TP or sequence
// parallelism), against the unsharded CPU reference of the layer, fp16 and bf16, fresh
// random data each run. At tp = 1 the collectives are copies (or nothing), so this checks the
// modules' own arithmetic - buffers, strides, the fused shards, the dropout keyed by token
// position - on any one-GPU machine; the sharding itself is checked by the program's --check
// on every rank of tp >= 2 (and on the CPU by tp_sim_test).
//
// Every schedule too: backward's collectives started on the side stream (the default) or in
// line (--no-overlap), and under sequence parallelism the LayerNorm outputs gathered again in
// backward (the default) or kept; under plain TP the row-parallel forwards in one GEMM or in
// row blocks (--fprop-chunks). At tp = 1 a "collective" is a copy on the stream it was
// given, so the side stream's events and the gather buffer shared by the forward's input and
// backward's output gradient are exercised: a wait in the wrong place, or a weight gradient
// that read the gradient left in the shared buffer instead of the re-gathered input, fails.
//
// --recompute-gelu too, in each of them (GELU's output computed again: the serial MLP over
// FC1's output in GELU's backward, after FC2's dgrad; the parallel layer in backward's d_cat,
// W_out's wgrad before its dgrad), and --recompute-layernorm with and without it (each
// LayerNorm's output computed again, into a backward buffer, before the QKV / FC1 / W_in wgrad;
// not with the kept gathered outputs, a refused pair); and for every schedule the activations the modules
// count as kept must equal tp_kept_activation_bytes (the chapter's table).
//
// And none of the schedule's choices changes a number (tp_schedule.h): with --deterministic
// (attention's dQ in a fixed order, the GEMMs' deterministic algorithms) every schedule's
// results must equal the default schedule's bit for bit - recomputed GELU and LayerNorm
// outputs included. The fast path (not deterministic) is checked once per variant, against the
// reference only.
//
// Tolerance: check_tolerance(dtype), the one every step's --check meets.
#include <stdlib.h>
#include <string.h>

#include "common/core/tolerance.h"
#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu.h"
#include "modules/gemm.h"
#include "reference/tp_layer_reference.h"
#include "reference/tp_reference.h"
#include "steps/07_tensor_parallel/layer_comm.h"
#include "steps/07_tensor_parallel/tp_comm.h"
#include "steps/07_tensor_parallel/tp_layer.h"
#include "steps/07_tensor_parallel/tp_schedule.h"
#include "tests/test_util.h"

// 1 if a and b hold the same bits in every tensor (out, dx, every gradient); else 0, naming the first
// tensor that differs.
static int results_identical(const LayerConfig *c, const LayerResults *a, const LayerResults *b) {
    const int64_t n = layer_tokens(c) * c->hidden;
    if (memcmp(a->out, b->out, (size_t)n * sizeof(float))) return print_message("  out differs in its bits\n"), 0;
    if (memcmp(a->dx, b->dx, (size_t)n * sizeof(float))) return print_message("  dx differs in its bits\n"), 0;
    for (int i = 0; i < NUM_PARAMS; i++)
        if (memcmp(a->grad.tensor[i], b->grad.tensor[i], (size_t)param_numel(c, i) * sizeof(float)))
            return print_message("  the gradient of %s differs in its bits\n", PARAM_NAMES[i]), 0;
    return 1;
}

static void results_copy(const LayerConfig *c, const LayerResults *from, LayerResults *to) {
    const int64_t n = layer_tokens(c) * c->hidden;
    memcpy(to->out, from->out, (size_t)n * sizeof(float));
    memcpy(to->dx, from->dx, (size_t)n * sizeof(float));
    for (int i = 0; i < NUM_PARAMS; i++)
        memcpy(to->grad.tensor[i], from->grad.tensor[i], (size_t)param_numel(c, i) * sizeof(float));
}

// One training step of a schedule against the reference `ref`; 1 if it passed. With `first`
// (c->deterministic), also bit for bit against the first schedule checked: the first call
// (*have_first 0) records its results in `first`, later ones must equal them.
static int check_schedule(const LayerConfig *c, const TpVariant *v, const LayerParams *p, const LayerInputs *in,
                          const LayerResults *ref, int overlap, TpSchedule sched, LayerResults *first,
                          int *have_first) {
    TpComm comm = {NULL, 0, 1, 10.0};  // the one rank of tp = 1: no communicator needed
    LayerCommOptions opt = LAYER_COMM_DEFAULTS;
    opt.overlap = overlap;
    LayerComm lc;
    layer_comm_init(&lc, &comm, &opt);
    LayerParams shard;
    tp_shard_params(c, 1, 0, p, &shard);
    TpLayer l;
    tp_layer_init(&l, c, 1, 0, v, &sched, &shard);
    // What the modules count as kept (their allocations) is what the chapter's table says.
    const size_t counted = tp_layer_activation_bytes(&l), predicted = tp_kept_activation_bytes(c, 1, v, &sched);
    if (counted != predicted) print_message("activations kept: counted %zu bytes, predicted %zu\n", counted, predicted);
    const int64_t n = layer_tokens(c) * c->hidden;
    void *x = dev_upload(in->x, n, c->dtype), *dy = dev_upload(in->dy, n, c->dtype);
    // Two steps: the second starts with every buffer as the first left it (the shared gather
    // buffer holds the output gradient), as in the program's timed loop.
    tp_layer_train_step(&l, &lc, x, dy, 0);
    tp_layer_train_step(&l, &lc, x, dy, 0);
    CUDA_CHECK(cudaDeviceSynchronize());
    LayerResults got;
    layer_results_alloc(c, &got);
    dev_download(got.out, tp_layer_output(&l), n, c->dtype);
    dev_download(got.dx, tp_layer_dx(&l), n, c->dtype);
    tp_layer_read_grads(&l, &got.grad);
    double worst;
    print_message("%s, %s, collectives %s, forward in %d row block(s)%s%s%s:\n", tp_variant_name(v),
                  dtype_name(c->dtype), overlap ? "overlapped" : "in line", sched.fprop_chunks,
                  !v->sequence_parallel              ? ""
                  : sched.sp_input == SP_REGATHER ? ", LN outputs gathered again"
                                                   : ", LN outputs kept",
                  sched.recompute_gelu ? ", GELU's output recomputed" : "",
                  sched.recompute_layernorm ? ", LN outputs recomputed" : "");
    int passed = compare_results(c, &got, ref, check_tolerance(c->dtype), stdout, &worst) && counted == predicted;
    if (first && *have_first) {
        const int same = results_identical(c, &got, first);
        print_message("  bit for bit the default schedule's: %s\n", same ? "yes" : "NO");
        passed = passed && same;
    } else if (first) {
        results_copy(c, &got, first), *have_first = 1;
    }
    tp_layer_free(&l);
    layer_comm_free(&lc);
    dev_free(x), dev_free(dy);
    layer_params_free(&shard);
    layer_results_free(&got);
    return passed;
}

static void check_variant(TpLayerKind layer, int sp, DType dtype) {
    LayerConfig c;
    layer_config_preset("small", &c);
    c.dtype = dtype;
    c.seed = test_seed();
    const TpVariant v = {layer, sp, 0, 0, 0};
    LayerParams p;
    LayerInputs in;
    LayerResults ref;
    layer_problem_init_random(&c, &p, &in);
    layer_results_alloc(&c, &ref);
    tp_variant_reference(&v)(&c, &p, &in, 0, &ref);
    // The fast path (dQ by atomics: not bit-reproducible), default schedule, against the reference.
    int failed = !check_schedule(&c, &v, &p, &in, &ref, 1, TP_SCHEDULE_DEFAULTS, NULL, NULL);
    // Every schedule, deterministic: against the reference and bit for bit the first (the default).
    c.deterministic = 1;
    gemm_set_deterministic(1);
    LayerResults first;
    layer_results_alloc(&c, &first);
    int have_first = 0;
    for (int overlap = 1; overlap >= 0; overlap--) {
        for (int keep = 0; keep <= sp; keep++) {
            for (int recompute = 0; recompute <= 1; recompute++) {  // GELU's output kept or recomputed
                // the LayerNorm outputs kept or recomputed (not with --keep-gathered: refused)
                for (int ln = 0; ln <= !keep; ln++) {
                    const TpSchedule sched = {keep ? SP_KEEP_GATHERED : SP_REGATHER, 1, recompute, ln};
                    failed += !check_schedule(&c, &v, &p, &in, &ref, overlap, sched, &first, &have_first);
                }
            }
        }
        if (!sp) {  // plain TP: the row-parallel forwards in 4 blocks (each summed on its own)
            const TpSchedule sched = {SP_REGATHER, 4, 0, 0}, recomputing = {SP_REGATHER, 4, 1, 0};
            const TpSchedule recomputing_all = {SP_REGATHER, 4, 1, 1};
            failed += !check_schedule(&c, &v, &p, &in, &ref, overlap, sched, &first, &have_first);
            failed += !check_schedule(&c, &v, &p, &in, &ref, overlap, recomputing, &first, &have_first);
            failed += !check_schedule(&c, &v, &p, &in, &ref, overlap, recomputing_all, &first, &have_first);
        }
    }
    gemm_set_deterministic(0);
    layer_results_free(&first);
    assert_int_equal(failed, 0);
    layer_params_free(&p);
    layer_inputs_free(&in);
    layer_results_free(&ref);
}

static void test_every_variant_at_tp_1(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    for (int d = 0; d < 2; d++)
        for (int layer = TP_LAYER_SERIAL; layer <= TP_LAYER_PARALLEL; layer++)
            for (int sp = 0; sp <= 1; sp++) check_variant((TpLayerKind)layer, sp, d ? DTYPE_BF16 : DTYPE_FP16);
}

// The SMs --overlap-sm-margin's default leaves to NCCL (no GPU needed): 16 on an H100/H200
// (132 SMs) and an L40S (142), an eighth of the SMs below 128 (an A100's 108: 13, an L4's 58: 7).
static void test_default_sm_margin(void **state) {
    (void)state;
    assert_int_equal(layer_comm_default_sm_margin(132), 16);
    assert_int_equal(layer_comm_default_sm_margin(142), 16);
    assert_int_equal(layer_comm_default_sm_margin(128), 16);
    assert_int_equal(layer_comm_default_sm_margin(108), 13);
    assert_int_equal(layer_comm_default_sm_margin(58), 7);
    assert_int_equal(layer_comm_default_sm_margin(4), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_sm_margin),
        cmocka_unit_test(test_every_variant_at_tp_1),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
