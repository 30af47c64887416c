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
// --recompute-gelu too, in each of them (GELU's output computed again in backward's buffer,
// FC2's / W_out's wgrad before its dgrad), and --recompute-layernorm with and without it (each
// LayerNorm's output computed again, into a backward buffer, before the QKV / FC1 / W_in wgrad;
// not with the kept gathered outputs, a refused pair); and for every schedule the activations the modules
// count as kept must equal tp_kept_activation_bytes (the chapter's table).
//
// Tolerance: check_tolerance(dtype), the one every step's --check meets.
#include <stdlib.h>
#include <string.h>

#include "common/core/tolerance.h"
#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu.h"
#include "reference/tp_layer_reference.h"
#include "reference/tp_reference.h"
#include "steps/07_tensor_parallel/layer_comm.h"
#include "steps/07_tensor_parallel/tp_comm.h"
#include "steps/07_tensor_parallel/tp_layer.h"
#include "steps/07_tensor_parallel/tp_schedule.h"
#include "tests/test_util.h"

// One training step of a schedule against the reference `ref`; 1 if it passed.
static int check_schedule(const LayerConfig *c, const TpVariant *v, const LayerParams *p, const LayerInputs *in,
                          const LayerResults *ref, int overlap, TpSchedule sched) {
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
    int failed = 0;
    for (int overlap = 1; overlap >= 0; overlap--) {
        for (int keep = 0; keep <= sp; keep++) {
            for (int recompute = 0; recompute <= 1; recompute++) {  // GELU's output kept or recomputed
                // the LayerNorm outputs kept or recomputed (not with --keep-gathered: refused)
                for (int ln = 0; ln <= !keep; ln++) {
                    const TpSchedule sched = {keep ? SP_KEEP_GATHERED : SP_REGATHER, 1, recompute, ln};
                    failed += !check_schedule(&c, &v, &p, &in, &ref, overlap, sched);
                }
            }
        }
        if (!sp) {  // plain TP: the row-parallel forwards in 4 blocks (each summed on its own)
            const TpSchedule sched = {SP_REGATHER, 4, 0, 0}, recomputing = {SP_REGATHER, 4, 1, 0};
            const TpSchedule recomputing_all = {SP_REGATHER, 4, 1, 1};
            failed += !check_schedule(&c, &v, &p, &in, &ref, overlap, sched);
            failed += !check_schedule(&c, &v, &p, &in, &ref, overlap, recomputing);
            failed += !check_schedule(&c, &v, &p, &in, &ref, overlap, recomputing_all);
        }
    }
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_variant_at_tp_1),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
