// Step 07's modules (tp_attention, tp_mlp, tp_parallel_layer through tp_layer) on ONE GPU, as
// the single rank of tp = 1, in every variant (serial or parallel layer, plain TP or sequence
// parallelism), against the unsharded CPU reference of the layer, fp16 and bf16, fresh
// random data each run. At tp = 1 the collectives are copies (or nothing), so this checks the
// modules' own arithmetic - buffers, strides, the fused shards, the dropout keyed by token
// position - on any one-GPU machine; the sharding itself is checked by the program's --check
// on every rank of tp >= 2 (and on the CPU by tp_sim_test).
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
#include "tests/test_util.h"

static void check_variant(TpLayerKind layer, int sp, DType dtype) {
    LayerConfig c;
    layer_config_preset("small", &c);
    c.dtype = dtype;
    c.seed = test_seed();
    const TpVariant v = {layer, sp, 0};
    LayerParams p;
    LayerInputs in;
    LayerResults ref, got;
    layer_params_alloc(&c, &p);
    layer_params_init_random(&c, c.seed, &p);
    layer_params_round(&c, &p);
    layer_inputs_alloc(&c, &in);
    layer_inputs_init_random(&c, c.seed + 1, &in);
    layer_inputs_round(&c, &in);
    layer_results_alloc(&c, &ref);
    layer_results_alloc(&c, &got);
    tp_variant_reference(&v)(&c, &p, &in, 0, &ref);

    TpComm comm = {NULL, 0, 1, 10.0};  // the one rank of tp = 1: no communicator needed
    LayerComm lc;
    layer_comm_init(&lc, &comm);
    LayerParams shard;
    tp_shard_params(&c, 1, 0, &p, &shard);
    TpLayer l;
    tp_layer_init(&l, &c, 1, 0, &v, &shard);
    const int64_t n = layer_tokens(&c) * c.hidden;
    void *x = dev_upload(in.x, n, dtype), *dy = dev_upload(in.dy, n, dtype);
    tp_layer_train_step(&l, &lc, x, dy, 0);
    CUDA_CHECK(cudaDeviceSynchronize());
    dev_download(got.out, tp_layer_output(&l), n, dtype);
    dev_download(got.dx, tp_layer_dx(&l), n, dtype);
    tp_layer_read_grads(&l, &got.grad);
    double worst;
    print_message("%s, %s:\n", tp_variant_name(&v), dtype_name(dtype));
    int passed = compare_results(&c, &got, &ref, check_tolerance(dtype), stdout, &worst);
    assert_true(passed);
    tp_layer_free(&l);
    layer_comm_free(&lc);
    dev_free(x), dev_free(dy);
    layer_params_free(&p), layer_params_free(&shard);
    layer_inputs_free(&in);
    layer_results_free(&ref), layer_results_free(&got);
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
