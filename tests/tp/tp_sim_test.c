// Tensor parallelism simulated on the CPU (reference/tp_reference.h) against the unsharded
// reference.
//
// Tolerance. The sharded computation does the same arithmetic as the reference except that
// each all-reduce adds tp partial sums in float (as NCCL does in fp32), where the reference
// accumulates the whole sum in double and rounds once. That costs a few float roundings
// (~6e-8 relative each) per element, somewhat amplified by LayerNorm and softmax: we observe
// 1e-8..1e-6. 1e-5 leaves a margin, while a real mistake (a head in the wrong shard, the
// row-parallel bias added tp times, a mask keyed by the local head) is off by 1e-2 or more.
#define _DEFAULT_SOURCE  // mkdtemp
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/core/layer.h"
#include "common/core/philox.h"
#include "reference/reference.h"
#include "reference/tp_reference.h"
#include "common/io/weights_io.h"
#include "tests/test_util.h"

static const double TP_TOL = 1e-5;

// Small enough for the CPU, with 4 heads so that tp = 4 still gives every rank a head.
static LayerConfig test_config(void) {
    LayerConfig c;
    layer_config_preset("tiny", &c);
    c.hidden = 64, c.ffn = 256, c.heads = 4, c.seq = 16, c.batch = 2;
    c.attn_dropout = 0.1f, c.hidden_dropout = 0.1f;
    c.seed = test_seed();
    return c;
}

static double rel_err(const float *a, const float *ref, int64_t n) {
    double d = 0.0, r = 0.0;
    for (int64_t i = 0; i < n; i++) {
        d += ((double)a[i] - ref[i]) * ((double)a[i] - ref[i]);
        r += (double)ref[i] * ref[i];
    }
    return r > 0.0 ? sqrt(d / r) : sqrt(d);
}

// ---- Shard-on-load and gather ---------------------------------------------------------------
static void test_shard_gather_round_trip(void **state) {
    (void)state;
    LayerConfig c = test_config();
    LayerParams full, back;
    layer_params_alloc(&c, &full);
    layer_params_alloc(&c, &back);
    layer_params_init_random(&c, test_seed(), &full);
    for (int tp = 1; tp <= 4; tp *= 2) {
        LayerParams shards[4];
        for (int r = 0; r < tp; r++) tp_shard_params(&c, tp, r, &full, &shards[r]);
        // Rank r's QKV shard is the contiguous block of rows of heads [r H/tp, (r+1) H/tp).
        int64_t rows = 3 * (int64_t)c.hidden / tp;
        for (int r = 0; r < tp; r++)
            assert_memory_equal(shards[r].tensor[P_QKV_WEIGHT],
                                full.tensor[P_QKV_WEIGHT] + r * rows * c.hidden,
                                (size_t)(rows * c.hidden) * sizeof(float));
        for (int id = 0; id < NUM_PARAMS; id++) memset(back.tensor[id], 0, (size_t)param_numel(&c, id) * sizeof(float));
        tp_gather_params(&c, tp, shards, &back);
        for (int id = 0; id < NUM_PARAMS; id++)
            assert_memory_equal(back.tensor[id], full.tensor[id], (size_t)param_numel(&c, id) * sizeof(float));
        for (int r = 0; r < tp; r++) layer_params_free(&shards[r]);
    }
    layer_params_free(&full);
    layer_params_free(&back);
}

// Through files with the unsharded (PyTorch) names: load the tp = 1 checkpoint, shard it on
// load, gather the shards back and save them under the same names: the same checkpoint.
static void test_checkpoint_round_trip(void **state) {
    (void)state;
    LayerConfig c = test_config();
    LayerParams full, loaded, back, again;
    layer_params_alloc(&c, &full);
    layer_params_alloc(&c, &loaded);
    layer_params_alloc(&c, &back);
    layer_params_alloc(&c, &again);
    layer_params_init_random(&c, test_seed(), &full);
    char dir[] = "/tmp/tp_ckpt_XXXXXX", a[64], b[64];
    assert_non_null(mkdtemp(dir));
    snprintf(a, sizeof a, "%s/full.safetensors", dir);
    snprintf(b, sizeof b, "%s/gathered.safetensors", dir);
    save_layer_params(a, &c, &full);
    load_layer_params(a, &c, &loaded);
    const int tp = 4;
    LayerParams shards[4];
    for (int r = 0; r < tp; r++) tp_shard_params(&c, tp, r, &loaded, &shards[r]);
    tp_gather_params(&c, tp, shards, &back);
    save_layer_params(b, &c, &back);
    load_layer_params(b, &c, &again);
    for (int id = 0; id < NUM_PARAMS; id++)
        assert_memory_equal(again.tensor[id], full.tensor[id], (size_t)param_numel(&c, id) * sizeof(float));
    for (int r = 0; r < tp; r++) layer_params_free(&shards[r]);
    layer_params_free(&full), layer_params_free(&loaded), layer_params_free(&back), layer_params_free(&again);
    remove(a), remove(b), rmdir(dir);
}

// ---- The whole layer ------------------------------------------------------------------------
static void check_layer(LayerConfig c, int tp) {
    LayerParams p;
    LayerInputs in;
    LayerResults ref, sim;
    layer_params_alloc(&c, &p);
    layer_params_init_random(&c, test_seed() + 1, &p);
    layer_inputs_alloc(&c, &in);
    layer_inputs_init_random(&c, test_seed() + 2, &in);
    layer_results_alloc(&c, &ref);
    layer_results_alloc(&c, &sim);
    const uint64_t step = 3;
    ref_layer_train_step(&c, &p, &in, step, &ref);
    tp_sim_layer_train_step(&c, tp, &p, &in, step, &sim, NULL);
    int64_t n = layer_tokens(&c) * c.hidden;
    double worst = fmax(rel_err(sim.out, ref.out, n), rel_err(sim.dx, ref.dx, n));
    const char *worst_name = "out/dx";
    for (int id = 0; id < NUM_PARAMS; id++) {
        double e = rel_err(sim.grad.tensor[id], ref.grad.tensor[id], param_numel(&c, id));
        if (e > worst) worst = e, worst_name = PARAM_NAMES[id];
    }
    print_message("layer tp=%d causal=%d: out %.2e dx %.2e, worst of all %.2e (%s)\n", tp, c.causal,
                  rel_err(sim.out, ref.out, n), rel_err(sim.dx, ref.dx, n), worst, worst_name);
    assert_rel_error(sim.out, ref.out, n, TP_TOL);
    assert_rel_error(sim.dx, ref.dx, n, TP_TOL);
    for (int id = 0; id < NUM_PARAMS; id++)
        assert_rel_error(sim.grad.tensor[id], ref.grad.tensor[id], param_numel(&c, id), TP_TOL);
    layer_params_free(&p);
    layer_inputs_free(&in);
    layer_results_free(&ref);
    layer_results_free(&sim);
}

static void test_layer_matches_unsharded(void **state) {
    (void)state;
    LayerConfig c = test_config();
    for (int tp = 1; tp <= 4; tp *= 2) check_layer(c, tp);
    c.causal = 1;
    check_layer(c, 2);
}

// Attention dropout must be keyed by the GLOBAL head index: rank 1 of 2 holds heads 2 and 3,
// and its masks must be those of heads 2 and 3 in the unsharded layer. Keyed by the local
// index (0 and 1) it would reuse rank 0's masks: a different (and correlated) dropout.
static void test_attention_shard_uses_global_heads(void **state) {
    (void)state;
    const int seq = 16, batch = 2, heads = 4, d = 8, tp = 2, hl = heads / tp;
    const int64_t T = (int64_t)seq * batch;
    float *qkv = random_floats(T * heads * 3 * d, -1.0f, 1.0f);
    float *ctx = calloc((size_t)(T * heads * d), sizeof(float));
    float *probs = calloc((size_t)(batch * heads * seq * seq), sizeof(float));
    float *qkv1 = calloc((size_t)(T * hl * 3 * d), sizeof(float));
    float *ctx1 = calloc((size_t)(T * hl * d), sizeof(float)), *want = calloc((size_t)(T * hl * d), sizeof(float));
    float *probs1 = calloc((size_t)(batch * hl * seq * seq), sizeof(float));
    ref_attention_forward(qkv, seq, batch, heads, d, 0.3f, 0, test_seed(), 5, ctx, probs);
    for (int64_t t = 0; t < T; t++) {  // rank 1's heads: a contiguous slice of every token
        memcpy(qkv1 + t * hl * 3 * d, qkv + t * heads * 3 * d + hl * 3 * d, (size_t)(hl * 3 * d) * sizeof(float));
        memcpy(want + t * hl * d, ctx + t * heads * d + hl * d, (size_t)(hl * d) * sizeof(float));
    }
    ref_attention_forward_heads(qkv1, seq, batch, hl, d, hl, heads, 0.3f, 0, test_seed(), 5, ctx1, probs1);
    assert_rel_error(ctx1, want, T * hl * d, 1e-6);
    ref_attention_forward_heads(qkv1, seq, batch, hl, d, 0, heads, 0.3f, 0, test_seed(), 5, ctx1, probs1);
    double wrong = rel_err(ctx1, want, T * hl * d);
    print_message("attention of rank 1 with local head keys: rel. error %.2e (must be large)\n", wrong);
    assert_true(wrong > 1e-2);
    free(qkv), free(ctx), free(probs), free(qkv1), free(ctx1), free(want), free(probs1);
}

// In plain TP every rank holds the same x, the same LayerNorm outputs and the same
// all-reduced gradients, so the replicated parameters get the same gradient everywhere:
// bit for bit, no all-reduce needed. The sharded ones are each rank's own.
static void test_replicated_gradients_agree(void **state) {
    (void)state;
    LayerConfig c = test_config();
    const int tp = 4;
    LayerParams p, rank_grads[4];
    LayerInputs in;
    LayerResults sim;
    layer_params_alloc(&c, &p);
    layer_params_init_random(&c, test_seed() + 1, &p);
    layer_inputs_alloc(&c, &in);
    layer_inputs_init_random(&c, test_seed() + 2, &in);
    layer_results_alloc(&c, &sim);
    tp_sim_layer_train_step(&c, tp, &p, &in, 0, &sim, rank_grads);
    for (int id = 0; id < NUM_PARAMS; id++) {
        TpSplit s = tp_param_split(id);
        int64_t n = tp_param_shard_numel(&c, tp, id);
        print_message("%-22s %-10s shard %6lld of %6lld\n", PARAM_NAMES[id], tp_split_name(s),
                      (long long)n, (long long)param_numel(&c, id));
        for (int r = 1; r < tp; r++) {
            int same = !memcmp(rank_grads[r].tensor[id], rank_grads[0].tensor[id], (size_t)n * sizeof(float));
            if (s == TP_REPLICATED) assert_true(same);   // identical: nothing to reduce
            else assert_false(same);                     // different slices of the gradient
        }
    }
    for (int r = 0; r < tp; r++) layer_params_free(&rank_grads[r]);
    layer_params_free(&p);
    layer_inputs_free(&in);
    layer_results_free(&sim);
}

// With sequence parallelism the LayerNorms run on a 1/tp slice of the tokens on each rank.
// Then each rank's LN gradient is the sum over ITS tokens only: they differ, and only their
// sum (an all-reduce) is the gradient of the layer.
static void test_sequence_parallel_needs_all_reduce(void **state) {
    (void)state;
    const int64_t T = 32;
    const int h = 64, tp = 4;
    float *x = random_floats(T * h, -1.0f, 1.0f), *dy = random_floats(T * h, -1.0f, 1.0f);
    float *gamma = random_floats(h, 0.9f, 1.1f), *beta = random_floats(h, -0.1f, 0.1f);
    float *y = calloc((size_t)(T * h), sizeof(float)), *dx = calloc((size_t)(T * h), sizeof(float));
    float mean[32], rstd[32], dg[64], db[64], dg_r[4][64], db_r[4][64], dg_sum[64], db_sum[64];
    ref_layernorm_forward(x, gamma, beta, T, h, 1e-5f, y, mean, rstd);
    ref_layernorm_backward(dy, x, gamma, mean, rstd, T, h, dx, dg, db);
    const int64_t Tl = T / tp;
    for (int r = 0; r < tp; r++)  // rank r: tokens [r T/tp, (r+1) T/tp)
        ref_layernorm_backward(dy + r * Tl * h, x + r * Tl * h, gamma, mean + r * Tl, rstd + r * Tl,
                               Tl, h, dx + r * Tl * h, dg_r[r], db_r[r]);
    double own = rel_err(dg_r[0], dg, h);
    print_message("sequence parallel: rank 0's own dgamma vs the full one: %.2e (needs the all-reduce)\n", own);
    assert_true(own > 0.1);
    float *bufs_g[4] = {dg_r[0], dg_r[1], dg_r[2], dg_r[3]}, *bufs_b[4] = {db_r[0], db_r[1], db_r[2], db_r[3]};
    tp_sim_all_reduce(bufs_g, tp, h);
    tp_sim_all_reduce(bufs_b, tp, h);
    memcpy(dg_sum, dg_r[0], sizeof dg_sum);
    memcpy(db_sum, db_r[0], sizeof db_sum);
    assert_rel_error(dg_sum, dg, h, TP_TOL);
    assert_rel_error(db_sum, db, h, TP_TOL);
    free(x), free(dy), free(gamma), free(beta), free(y), free(dx);
}

// ---- The block: column-parallel Linear -> LayerNorm -> row-parallel Linear -------------------
typedef struct {
    double out, dx, w1, b1, gamma, beta, w2, b2;
} BlockErrors;

static BlockErrors block_errors(int tp, TpLnMode mode) {
    const int64_t T = 32;
    const int h = 64, f = 256;
    TpBlock p;
    TpBlockResults ref, sim;
    tp_block_alloc(&p, h, f);
    tp_block_init_random(&p, test_seed() + 5);
    float *x = random_floats(T * h, 0.0f, 1.0f), *dout = random_floats(T * h, 0.0f, 1.0f);
    tp_block_results_alloc(&ref, T, h, f);
    tp_block_results_alloc(&sim, T, h, f);
    tp_block_reference(&p, x, dout, T, 1e-5f, &ref);
    tp_block_sim(&p, x, dout, T, 1e-5f, tp, mode, &sim);
    BlockErrors e = {
        rel_err(sim.out, ref.out, T * h), rel_err(sim.dx, ref.dx, T * h),
        rel_err(sim.grad.w1, ref.grad.w1, (int64_t)f * h), rel_err(sim.grad.b1, ref.grad.b1, f),
        rel_err(sim.grad.gamma, ref.grad.gamma, f), rel_err(sim.grad.beta, ref.grad.beta, f),
        rel_err(sim.grad.w2, ref.grad.w2, (int64_t)h * f), rel_err(sim.grad.b2, ref.grad.b2, h),
    };
    print_message("| %-12s | %2d | %.1e | %.1e | %.1e | %.1e | %.1e | %.1e | %.1e | %.1e |\n",
                  mode == TP_LN_EXACT ? "(b) exact" : "(a) local", tp, e.out, e.dx, e.w1, e.b1,
                  e.gamma, e.beta, e.w2, e.b2);
    tp_block_free(&p);
    tp_block_results_free(&ref);
    tp_block_results_free(&sim);
    free(x), free(dout);
    return e;
}

static double block_worst(BlockErrors e) {
    double v[] = {e.out, e.dx, e.w1, e.b1, e.gamma, e.beta, e.w2, e.b2}, m = 0.0;
    for (int i = 0; i < 8; i++) m = fmax(m, v[i]);
    return m;
}

static void print_block_header(void) {
    print_message("| LayerNorm    | tp | out     | dx      | dW1     | db1     | dgamma  | dbeta   | dW2     | db2     |\n");
}

static void test_block_exact_matches_unsharded(void **state) {
    (void)state;
    print_block_header();
    for (int tp = 1; tp <= 4; tp *= 2) assert_true(block_worst(block_errors(tp, TP_LN_EXACT)) <= TP_TOL);
}

// Shard-local statistics are the unsharded LayerNorm only when there is one shard. For
// tp > 1 each slice is centred and scaled by its own mean and variance: a GroupNorm with tp
// groups, a different function: the outputs differ by far more than rounding.
static void test_block_shard_local_differs(void **state) {
    (void)state;
    print_block_header();
    assert_true(block_worst(block_errors(1, TP_LN_SHARD_LOCAL)) <= TP_TOL);
    for (int tp = 2; tp <= 4; tp *= 2) {
        BlockErrors e = block_errors(tp, TP_LN_SHARD_LOCAL);
        assert_true(e.out > 1e-3);
        assert_true(e.dx > 1e-3);
        assert_true(e.gamma > 1e-3);
    }
}

// ---- Bad input --------------------------------------------------------------------------------
static void test_bad_tp_sizes(void **state) {
    (void)state;
    LayerConfig c = test_config();  // heads 4, hidden 64, ffn 256
    const char *m = tp_config_problem(&c, 3);
    assert_non_null(m);
    print_message("tp=3: %s\n", m);
    assert_non_null(strstr(m, "heads"));
    assert_non_null(tp_config_problem(&c, 0));
    assert_non_null(tp_config_problem(&c, 8));  // 8 does not divide 4 heads
    c.heads = 8, c.ffn = 260;
    m = tp_config_problem(&c, 8);
    assert_non_null(m);
    print_message("ffn=260 tp=8: %s\n", m);
    assert_non_null(strstr(m, "ffn"));
    c.ffn = 256;
    assert_null(tp_config_problem(&c, 8));
    m = tp_block_problem(64, 100, 8);
    assert_non_null(m);
    assert_non_null(strstr(m, "ffn"));
    assert_null(tp_block_problem(64, 256, 8));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shard_gather_round_trip),
        cmocka_unit_test(test_checkpoint_round_trip),
        cmocka_unit_test(test_layer_matches_unsharded),
        cmocka_unit_test(test_attention_shard_uses_global_heads),
        cmocka_unit_test(test_replicated_gradients_agree),
        cmocka_unit_test(test_sequence_parallel_needs_all_reduce),
        cmocka_unit_test(test_block_exact_matches_unsharded),
        cmocka_unit_test(test_block_shard_local_differs),
        cmocka_unit_test(test_bad_tp_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
