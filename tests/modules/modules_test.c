// The TE-style modules (modules/) against the CPU reference, fp16 and bf16, on fresh random
// data, through their own API (forward, backward, load_params, read_grads); then steps 02,
// 03, 04 and 06 as a whole; --deterministic's steps, which must repeat their bits; and step
// 04's wgrads on a second stream (its default), which must give one stream's bits.
#include <stdlib.h>
#include <string.h>

#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu.h"
#include "kernels/layernorm/fast_layernorm.h"
#include "modules/gemm.h"
#include "modules/layernorm.h"
#include "modules/layernorm_linear.h"
#include "modules/layernorm_mlp.h"
#include "modules/linear.h"
#include "reference/reference.h"
#include "steps/driver/step.h"
#include "steps/02_te_modules/step02.h"
#include "steps/03_fused_modules/step03.h"
#include "steps/04_transformer_layer/step04.h"
#include "steps/06_parallel_layers/step06.h"
#include "tests/test_util.h"

// Relative-error tolerances: storage rounding of the result (fp16 2^-11, bf16 2^-8 per
// element) and of the intermediates a fused module keeps in 16 bits; float32 accumulation.
static double tol(DType dt) { return dt == DTYPE_BF16 ? 1.2e-2 : 2e-3; }

static float *rnd(int64_t n, float lo, float hi, DType dt) {
    float *x = random_floats(n, lo, hi);
    round_to_dtype(x, n, dt);
    return x;
}

static float *down(const void *dev, int64_t n, DType dt) {
    float *x = malloc((size_t)n * sizeof(float));
    dev_download(x, dev, n, dt);
    return x;
}

static void check(const char *what, const void *dev, const float *ref, int64_t n, DType dt, double t) {
    float *got = down(dev, n, dt);
    print_message("  %-14s", what);
    assert_rel_error(got, ref, n, t);
    free(got);
}

static void test_linear(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    const int tokens = 200, in = 264, out = 136;
    for (int d = 0; d < 2; d++) {
        DType dt = d ? DTYPE_BF16 : DTYPE_FP16;
        float *x = rnd(tokens * in, -1, 1, dt), *w = rnd(out * in, -0.2f, 0.2f, dt), *b = rnd(out, -1, 1, dt);
        float *r = rnd(tokens * out, -1, 1, dt), *dy = rnd(tokens * out, -1, 1, dt);
        float *y = malloc(tokens * out * 4), *dx = malloc(tokens * in * 4), *dw = malloc(out * in * 4), *db = malloc(out * 4);
        ref_linear_forward(x, w, b, tokens, in, out, y);
        for (int i = 0; i < tokens * out; i++) y[i] += r[i];  // with a residual
        ref_linear_backward(dy, x, w, tokens, in, out, dx, dw, db);
        Linear l;
        linear_init(&l, in, out, w, b, dt);
        void *d_x = dev_upload(x, tokens * in, dt), *d_r = dev_upload(r, tokens * out, dt);
        void *d_dy = dev_upload(dy, tokens * out, dt), *d_y = dev_alloc(tokens * out * 2), *d_dx = dev_alloc(tokens * in * 2);
        linear_forward(&l, d_x, d_y, tokens, d_r);
        linear_backward(&l, d_dy, d_dx, tokens);
        print_message(" Linear %s\n", dtype_name(dt));
        check("y", d_y, y, tokens * out, dt, tol(dt));
        check("dx", d_dx, dx, tokens * in, dt, tol(dt));
        check("dweight", l.dweight, dw, out * in, dt, tol(dt));
        check("dbias (BGRADB)", l.dbias, db, out, dt, tol(dt));
        // Without the bias, which is handed back for a later pass (TE's return_bias); its
        // gradient is still summed, from the same dy. The backward in two halves, as step 07
        // runs it (dgrad, then wgrad from the x this forward recorded).
        ref_linear_forward(x, w, NULL, tokens, in, out, y);
        assert_ptr_equal(linear_forward_return_bias(&l, d_x, d_y, tokens), l.bias);
        CUDA_CHECK(cudaMemset(l.dweight, 0, (size_t)out * in * 2));
        CUDA_CHECK(cudaMemset(l.dbias, 0, (size_t)out * 2));
        linear_dgrad(&l, d_dy, d_dx, tokens);
        linear_wgrad(&l, d_dy, tokens, 1);
        print_message(" Linear %s, bias returned, dgrad and wgrad apart\n", dtype_name(dt));
        check("y (no bias)", d_y, y, tokens * out, dt, tol(dt));
        check("dx", d_dx, dx, tokens * in, dt, tol(dt));
        check("dweight", l.dweight, dw, out * in, dt, tol(dt));
        check("dbias (BGRADB)", l.dbias, db, out, dt, tol(dt));
        linear_free(&l);
        dev_free(d_x), dev_free(d_r), dev_free(d_dy), dev_free(d_y), dev_free(d_dx);
        free(x), free(w), free(b), free(r), free(dy), free(y), free(dx), free(dw), free(db);
    }
    int plans;
    long hits;
    gemm_cache_stats(&plans, &hits);
    print_message("  GEMM plans %d, cache hits %ld\n", plans, hits);
    assert_true(plans >= 3);
}

static void layernorm_case(DType dt, int rows, int cols) {
    float *x = rnd((int64_t)rows * cols, -2, 3, dt), *g = rnd(cols, 0.5f, 1.5f, dt), *b = rnd(cols, -1, 1, dt);
    float *dy = rnd((int64_t)rows * cols, -1, 1, dt), *res = rnd((int64_t)rows * cols, -1, 1, dt);
    int64_t n = (int64_t)rows * cols;
    float *y = malloc(n * 4), *mean = malloc(rows * 4), *rstd = malloc(rows * 4), *dx = malloc(n * 4);
    float *dg = malloc(cols * 4), *db = malloc(cols * 4);
    ref_layernorm_forward(x, g, b, rows, cols, 1e-5f, y, mean, rstd);
    ref_layernorm_backward(dy, x, g, mean, rstd, rows, cols, dx, dg, db);
    for (int64_t i = 0; i < n; i++) dx[i] += res[i];
    LayerNorm ln;
    layernorm_init(&ln, cols, rows, 1e-5f, g, b, dt);
    void *d_x = dev_upload(x, n, dt), *d_dy = dev_upload(dy, n, dt), *d_res = dev_upload(res, n, dt);
    void *d_y = dev_alloc(n * 2), *d_dx = dev_alloc(n * 2);
    layernorm_forward(&ln, d_x, d_y, rows);
    layernorm_backward(&ln, d_dy, d_res, d_dx, rows);
    print_message(" LayerNorm %s %d x %d\n", dtype_name(dt), rows, cols);
    check("y", d_y, y, n, dt, tol(dt));
    check("dx (+resid.)", d_dx, dx, n, dt, tol(dt));
    check("dgamma", ln.dgamma, dg, cols, dt, tol(dt));
    check("dbeta", ln.dbeta, db, cols, dt, tol(dt));
    float *m = malloc(rows * 4);
    dev_download_f32(m, ln.mean, rows);
    assert_rel_error(m, mean, rows, 1e-5);
    free(m);
    layernorm_free(&ln);
    dev_free(d_x), dev_free(d_dy), dev_free(d_res), dev_free(d_y), dev_free(d_dx);
    free(x), free(g), free(b), free(dy), free(res), free(y), free(mean), free(rstd), free(dx), free(dg), free(db);
}

static void test_layernorm(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    layernorm_case(DTYPE_FP16, 300, 64);     // fewer packs than threads
    layernorm_case(DTYPE_FP16, 1000, 1032);  // not a multiple of the block's stride
    layernorm_case(DTYPE_BF16, 513, 4096);   // the quickstart's width
    layernorm_case(DTYPE_FP16, 64, 8192);
}

// The backward's rows must fit one block's shared memory, which is a third smaller on an A100
// than on Hopper, and smaller again on RTX 30xx/40xx and L4: what does not fit is refused in a
// sentence (GPU_SIMULATE_CC=8.0 or 8.6 shows it on a Hopper GPU).
static void test_layernorm_shared_memory_limit(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    const size_t have = gpu_max_smem_per_block();
    print_message("  shared memory per block here: %zu bytes\n", have);
    assert_null(layernorm_fast_backward_unsupported(4096, DTYPE_BF16));  // the quickstart, on any GPU
    for (int cols = 8192; cols <= 16384; cols += 8192) {
        const char *why = layernorm_fast_backward_unsupported(cols, DTYPE_FP16);
        print_message("  cols %d: %s\n", cols, why ? why : "fits");
        const int fits = (size_t)12 * cols + 1024 <= have;  // 12 bytes a column, + room for the static arrays
        const int too_big = (size_t)12 * cols > have;
        if (fits) assert_null(why);
        if (too_big) {
            assert_non_null(why);
            assert_non_null(strstr(why, "values per row here"));
        }
    }
}

static void test_layernorm_mlp_and_linear(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    const int t = 130, h = 128, f = 512;
    for (int d = 0; d < 2; d++) {
        DType dt = d ? DTYPE_BF16 : DTYPE_FP16;
        float *x = rnd(t * h, -1, 1, dt), *g = rnd(h, 0.8f, 1.2f, dt), *b = rnd(h, -0.2f, 0.2f, dt);
        float *w1 = rnd(f * h, -0.1f, 0.1f, dt), *b1 = rnd(f, -0.5f, 0.5f, dt);
        float *w2 = rnd(h * f, -0.05f, 0.05f, dt), *b2 = rnd(h, -0.5f, 0.5f, dt), *dy = rnd(t * h, -1, 1, dt);
        // Reference: out = x + FC2(GELU(FC1(LN(x)))), and its backward.
        float *ln = malloc(t * h * 4), *mean = malloc(t * 4), *rstd = malloc(t * 4), *h1 = malloc(t * f * 4);
        float *a1 = malloc(t * f * 4), *out = malloc(t * h * 4), *da1 = malloc(t * f * 4), *dh1 = malloc(t * f * 4);
        float *dln = malloc(t * h * 4), *dx = malloc(t * h * 4), *dg = malloc(h * 4), *db = malloc(h * 4);
        float *dw1 = malloc(f * h * 4), *db1 = malloc(f * 4), *dw2 = malloc(h * f * 4), *db2 = malloc(h * 4);
        ref_layernorm_forward(x, g, b, t, h, 1e-5f, ln, mean, rstd);
        ref_linear_forward(ln, w1, b1, t, h, f, h1);
        ref_gelu_forward(h1, t * f, a1);
        ref_linear_forward(a1, w2, b2, t, f, h, out);
        for (int i = 0; i < t * h; i++) out[i] += x[i];
        ref_linear_backward(dy, a1, w2, t, f, h, da1, dw2, db2);
        ref_gelu_backward(da1, h1, t * f, dh1);
        ref_linear_backward(dh1, ln, w1, t, h, f, dln, dw1, db1);
        ref_layernorm_backward(dln, x, g, mean, rstd, t, h, dx, dg, db);
        for (int i = 0; i < t * h; i++) dx[i] += dy[i];
        void *d_x = dev_upload(x, t * h, dt), *d_dy = dev_upload(dy, t * h, dt);
        void *d_out = dev_alloc(t * h * 2), *d_dx = dev_alloc(t * h * 2);
        // Every place GELU' can run (layernorm_mlp.h) computes the same gradients.
        const GeluBackward modes[] = {GELU_BACKWARD_IN_EPILOGUE, GELU_BACKWARD_SEPARATE_PASS,
                                      GELU_BACKWARD_IN_EPILOGUE_WITH_BGRAD};
        const char *mode_names[] = {"GELU' in FC2's epilogue", "GELU' as a pass", "GELU' and db1 in the epilogue"};
        // The modules start from other random weights and get the real ones by load_params,
        // and their gradients are read by read_grads: both must reach every tensor.
        float *o_g = rnd(h, 0.8f, 1.2f, dt), *o_b = rnd(h, -0.2f, 0.2f, dt), *o_w1 = rnd(f * h, -0.1f, 0.1f, dt);
        float *o_b1 = rnd(f, -0.5f, 0.5f, dt), *o_w2 = rnd(h * f, -0.05f, 0.05f, dt), *o_b2 = rnd(h, -0.5f, 0.5f, dt);
        const LayerNormMLPTensors real = {g, b, w1, b1, w2, b2}, other = {o_g, o_b, o_w1, o_b1, o_w2, o_b2};
        float *gg = malloc(h * 4), *gb = malloc(h * 4), *gw1 = malloc(f * h * 4), *gb1 = malloc(f * 4);
        float *gw2 = malloc(h * f * 4), *gb2 = malloc(h * 4);
        const LayerNormMLPTensors grads = {gg, gb, gw1, gb1, gw2, gb2};
        for (int mode = 0; mode < 3; mode++) {
            LayerNormMLP m;
            layernorm_mlp_init(&m, h, f, t, 1e-5f, mode == 0 ? &real : &other, dt);
            if (mode > 0) layernorm_mlp_load_params(&m, &real);
            m.gelu_backward = modes[mode];
            layernorm_mlp_forward(&m, d_x, d_out, t, d_x);
            layernorm_mlp_backward(&m, d_dy, d_dy, d_dx, t);
            layernorm_mlp_read_grads(&m, &grads);
            print_message(" LayerNormMLP %s, %s%s\n", dtype_name(dt), mode_names[mode],
                          mode > 0 ? ", weights by load_params" : "");
            check("out", d_out, out, t * h, dt, tol(dt));
            check("dx", d_dx, dx, t * h, dt, 2 * tol(dt));
            assert_rel_error(gg, dg, h, 2 * tol(dt));
            assert_rel_error(gb, db, h, 2 * tol(dt));
            assert_rel_error(gw1, dw1, f * h, 2 * tol(dt));
            assert_rel_error(gb1, db1, f, 2 * tol(dt));
            assert_rel_error(gw2, dw2, h * f, tol(dt));
            assert_rel_error(gb2, db2, h, tol(dt));
            layernorm_mlp_free(&m);
        }
        // LayerNormLinear on the same LN and FC1 weights: y = FC1(LN(x)).
        LayerNormLinear lnl;
        const LayerNormLinearTensors lnl_other = {o_g, o_b, o_w1, o_b1}, lnl_real = {g, b, w1, b1};
        const LayerNormLinearTensors lnl_grads = {gg, gb, gw1, gb1};
        layernorm_linear_init(&lnl, h, f, t, 1e-5f, &lnl_other, dt);
        layernorm_linear_load_params(&lnl, &lnl_real);
        void *d_y = dev_alloc(t * f * 2), *d_dh = dev_upload(dh1, t * f, dt);
        layernorm_linear_forward(&lnl, d_x, d_y, t);
        layernorm_linear_backward(&lnl, d_dh, NULL, d_dx, t);
        layernorm_linear_read_grads(&lnl, &lnl_grads);
        float *dx2 = malloc(t * h * 4);
        ref_layernorm_backward(dln, x, g, mean, rstd, t, h, dx2, dg, db);
        print_message(" LayerNormLinear %s, weights by load_params\n", dtype_name(dt));
        check("y", d_y, h1, t * f, dt, tol(dt));
        check("dx", d_dx, dx2, t * h, dt, 2 * tol(dt));
        assert_rel_error(gw1, dw1, f * h, 2 * tol(dt));
        assert_rel_error(gb1, db1, f, 2 * tol(dt));
        assert_rel_error(gg, dg, h, 2 * tol(dt));
        assert_rel_error(gb, db, h, 2 * tol(dt));
        layernorm_linear_free(&lnl);
        float *more[] = {o_g, o_b, o_w1, o_b1, o_w2, o_b2, gg, gb, gw1, gb1, gw2, gb2};
        for (size_t i = 0; i < sizeof more / sizeof more[0]; i++) free(more[i]);
        dev_free(d_x), dev_free(d_dy), dev_free(d_out), dev_free(d_dx), dev_free(d_y), dev_free(d_dh);
        float *all[] = {x, g, b, w1, b1, w2, b2, dy, ln, mean, rstd, h1, a1, out, da1, dh1, dln, dx, dg, db,
                        dw1, db1, dw2, db2, dx2};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
    }
}

static void whole_step(const StepOps *step, DType dt, int causal) {
    LayerConfig cfg;
    layer_config_preset("small", &cfg);
    cfg.dtype = dt, cfg.causal = causal, cfg.seed = test_seed();
    LayerParams p;
    LayerInputs in;
    layer_problem_init_random(&cfg, &p, &in);
    StepReport r = {0};
    step_check(step, &cfg, &p, &in, stdout, &r);
    print_message(" step %s %s causal %d: max rel.err %.3e\n", step->id, dtype_name(dt), causal, r.max_rel_error);
    assert_int_equal(r.check_passed, 1);
    layer_params_free(&p);
    layer_inputs_free(&in);
}

static void test_steps(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    whole_step(&STEP_02_TE_MODULES, DTYPE_FP16, 0);
    whole_step(&STEP_02_TE_MODULES, DTYPE_BF16, 1);
    whole_step(&STEP_03_FUSED_MODULES, DTYPE_FP16, 1);
    whole_step(&STEP_03_FUSED_MODULES, DTYPE_BF16, 0);
    whole_step(&STEP_04_TRANSFORMER_LAYER, DTYPE_FP16, 0);
    whole_step(&STEP_04_TRANSFORMER_LAYER, DTYPE_BF16, 1);
    whole_step(&STEP_06_PARALLEL_LAYERS, DTYPE_FP16, 0);
    whole_step(&STEP_06_PARALLEL_LAYERS, DTYPE_BF16, 1);
    whole_step(&STEP_06_PARALLEL_UNFUSED, DTYPE_FP16, 1);
}

// ---- deterministic steps (LayerConfig.deterministic) ------------------------------------------
// One training step (step index 0) on the GPU, its results on the host: what --save writes.
static void gpu_step(const StepOps *step, const LayerConfig *cfg, const LayerParams *p, const LayerInputs *in,
                     LayerResults *res) {
    const int64_t n = layer_tokens(cfg) * cfg->hidden;
    void *d_x = dev_upload(in->x, n, cfg->dtype), *d_dy = dev_upload(in->dy, n, cfg->dtype);
    void *state = step->create(cfg, p);
    step->train_step(state, d_x, d_dy, 0);
    CUDA_CHECK(cudaDeviceSynchronize());
    step->read_results(state, res);
    step->destroy(state);
    dev_free(d_x), dev_free(d_dy);
}

static int same_bits(const float *a, const float *b, int64_t n) { return memcmp(a, b, (size_t)n * sizeof(float)) == 0; }

// The step in deterministic mode: --check's comparison with the reference (small preset), then
// two steps at seq 512 (8 key blocks per dQ row at head dim 64, so the order of their sum
// matters) whose out, dx and every gradient must agree bit for bit.
static void deterministic_step(const StepOps *step, DType dt, int causal) {
    LayerConfig cfg;
    layer_config_preset("small", &cfg);
    cfg.dtype = dt, cfg.causal = causal, cfg.seed = test_seed(), cfg.deterministic = 1;
    gemm_set_deterministic(1);  // as the driver does for --deterministic
    for (int seq = 128; seq <= 512; seq += 384) {
        cfg.seq = seq;
        LayerParams p;
        LayerInputs in;
        layer_problem_init_random(&cfg, &p, &in);
        if (seq == 128) {
            StepReport r = {0};
            step_check(step, &cfg, &p, &in, stdout, &r);
            print_message(" step %s %s causal %d, deterministic: max rel.err %.3e\n", step->id, dtype_name(dt),
                          causal, r.max_rel_error);
            assert_int_equal(r.check_passed, 1);
        } else {
            LayerResults a, b;
            layer_results_alloc(&cfg, &a);
            layer_results_alloc(&cfg, &b);
            gpu_step(step, &cfg, &p, &in, &a);
            gpu_step(step, &cfg, &p, &in, &b);
            const int64_t n = layer_tokens(&cfg) * cfg.hidden;
            int same = same_bits(a.out, b.out, n) && same_bits(a.dx, b.dx, n);
            for (int i = 0; i < NUM_PARAMS; i++) same &= same_bits(a.grad.tensor[i], b.grad.tensor[i], param_numel(&cfg, i));
            print_message(" step %s %s causal %d seq %d, deterministic: two runs %s\n", step->id, dtype_name(dt),
                          causal, seq, same ? "bit-identical" : "DIFFER");
            assert_true(same);
            layer_results_free(&a);
            layer_results_free(&b);
        }
        layer_params_free(&p);
        layer_inputs_free(&in);
    }
    gemm_set_deterministic(0);
}

static void test_deterministic_steps(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    deterministic_step(&STEP_04_TRANSFORMER_LAYER, DTYPE_FP16, 0);
    deterministic_step(&STEP_04_TRANSFORMER_LAYER, DTYPE_BF16, 1);
    deterministic_step(&STEP_06_PARALLEL_LAYERS, DTYPE_FP16, 1);
}

// ---- step 04's wgrads on a second stream (the default; layernorm_mlp.h) ----------------------------
// Two training steps in a row from other inputs (and other dropout masks), without a host
// wait between them, then the results of the second: its forward overwrites the activations the
// first step's side-stream wgrads read, so the join at the end of each backward must hold.
static void two_gpu_steps(const StepOps *step, const LayerConfig *cfg, const LayerParams *p, const LayerInputs *first,
                          const LayerInputs *second, LayerResults *res) {
    const int64_t n = layer_tokens(cfg) * cfg->hidden;
    void *x1 = dev_upload(first->x, n, cfg->dtype), *dy1 = dev_upload(first->dy, n, cfg->dtype);
    void *x2 = dev_upload(second->x, n, cfg->dtype), *dy2 = dev_upload(second->dy, n, cfg->dtype);
    void *state = step->create(cfg, p);
    step->train_step(state, x1, dy1, 0);
    step->train_step(state, x2, dy2, 1);
    step->read_results(state, res);  // read_grads orders itself after the wgrads; no device-wide wait first
    step->destroy(state);
    dev_free(x1), dev_free(dy1), dev_free(x2), dev_free(dy2);
}

// Deterministic (attention's dQ summed in a fixed order), so that one stream repeats its bits:
// with the wgrads on the side stream every result must have exactly those bits (the same GEMM
// algorithms, only another stream), at seq 512; then --check passes with it at the small preset.
static void overlap_wgrad_step(DType dt, int causal) {
    LayerConfig cfg;
    layer_config_preset("small", &cfg);
    cfg.dtype = dt, cfg.causal = causal, cfg.seed = test_seed(), cfg.deterministic = 1, cfg.seq = 512;
    gemm_set_deterministic(1);
    LayerParams p;
    LayerInputs in1, in2;
    layer_params_alloc(&cfg, &p);
    layer_params_init_random(&cfg, cfg.seed, &p);
    layer_params_round(&cfg, &p);
    layer_inputs_alloc(&cfg, &in1);
    layer_inputs_alloc(&cfg, &in2);
    layer_inputs_init_random(&cfg, cfg.seed + 1, &in1);
    layer_inputs_init_random(&cfg, cfg.seed + 2, &in2);
    layer_inputs_round(&cfg, &in1);
    layer_inputs_round(&cfg, &in2);
    LayerResults one, two;
    layer_results_alloc(&cfg, &one);
    layer_results_alloc(&cfg, &two);
    step04_set_overlap_wgrad(0);
    two_gpu_steps(&STEP_04_TRANSFORMER_LAYER, &cfg, &p, &in1, &in2, &one);
    step04_set_overlap_wgrad(1);
    two_gpu_steps(&STEP_04_TRANSFORMER_LAYER, &cfg, &p, &in1, &in2, &two);
    const int64_t n = layer_tokens(&cfg) * cfg.hidden;
    int same = same_bits(one.out, two.out, n) && same_bits(one.dx, two.dx, n);
    for (int i = 0; i < NUM_PARAMS; i++) {
        const int same_grad = same_bits(one.grad.tensor[i], two.grad.tensor[i], param_numel(&cfg, i));
        if (!same_grad) print_message("  grad %s differs\n", PARAM_NAMES[i]);
        same &= same_grad;
    }
    print_message(" step 04 %s causal %d seq %d, BGRAD %s: wgrads on a second stream against one: %s\n", dtype_name(dt),
                  causal, cfg.seq, epilogue_place_name(linear_epilogue_place(EPILOGUE_KIND_BGRAD)),
                  same ? "bit-identical" : "DIFFER");
    layer_results_free(&one);
    layer_results_free(&two);
    layer_params_free(&p);
    layer_inputs_free(&in1);
    layer_inputs_free(&in2);
    gemm_set_deterministic(0);
    whole_step(&STEP_04_TRANSFORMER_LAYER, dt, causal);  // --check with the second stream
    step04_set_overlap_wgrad(0);
    whole_step(&STEP_04_TRANSFORMER_LAYER, dt, causal);  // --check --no-overlap-wgrad
    step04_set_overlap_wgrad(1);                          // the default again
    assert_true(same);
}

static void test_overlap_wgrad(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    overlap_wgrad_step(DTYPE_FP16, 0);
    overlap_wgrad_step(DTYPE_BF16, 1);
    // The bias gradients as kernels after plain wgrads: those kernels go to the side stream too.
    linear_set_epilogue_place(EPILOGUE_KIND_BGRAD, EPILOGUE_IN_KERNEL);
    overlap_wgrad_step(DTYPE_FP16, 1);
    linear_set_epilogue_place(EPILOGUE_KIND_BGRAD, -1);
}

// ---- the epilogues' work in kernels of their own (linear.h: EPILOGUE_<KIND>=kernel) -------------
static void set_places(int setting) {  // setting < EPILOGUE_KINDS: that kind alone; == : all four
    for (int k = 0; k < EPILOGUE_KINDS; k++)
        linear_set_epilogue_place((EpilogueKind)k,
                                  setting == EPILOGUE_KINDS || setting == k ? EPILOGUE_IN_KERNEL : EPILOGUE_IN_GEMM);
}

// Each kind of epilogue moved into its kernel alone, then all four: the modules' tests and
// --check of every step that uses them must still pass (the lead's A/B runs any of these).
static void test_epilogues_in_kernels(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    for (int setting = 0; setting <= EPILOGUE_KINDS; setting++) {
        set_places(setting);
        print_message(" --- %s ---\n", setting == EPILOGUE_KINDS ? "every epilogue in a kernel"
                                                                : epilogue_kind_variable((EpilogueKind)setting));
        for (int k = 0; k < EPILOGUE_KINDS; k++)
            print_message("  %s=%s\n", epilogue_kind_variable((EpilogueKind)k),
                          epilogue_place_name(linear_epilogue_place((EpilogueKind)k)));
        test_linear(NULL);
        // (Its GELU' modes are set by the test; the steps below take init's, from EPILOGUE_DGELU.)
        test_layernorm_mlp_and_linear(NULL);
        whole_step(&STEP_02_TE_MODULES, DTYPE_FP16, 0);
        whole_step(&STEP_03_FUSED_MODULES, DTYPE_BF16, 1);
        whole_step(&STEP_04_TRANSFORMER_LAYER, DTYPE_FP16, 0);
        whole_step(&STEP_04_TRANSFORMER_LAYER, DTYPE_BF16, 1);
        whole_step(&STEP_06_PARALLEL_LAYERS, DTYPE_FP16, 1);
        whole_step(&STEP_06_PARALLEL_UNFUSED, DTYPE_BF16, 0);
    }
    // The bias gradient's kernel adds in a fixed order: --deterministic still repeats its bits.
    deterministic_step(&STEP_04_TRANSFORMER_LAYER, DTYPE_FP16, 1);
    for (int k = 0; k < EPILOGUE_KINDS; k++) linear_set_epilogue_place((EpilogueKind)k, -1);
}

// The switch's words, and its default (no GPU needed).
static void test_epilogue_places(void **state) {
    (void)state;
    assert_string_equal(epilogue_kind_variable(EPILOGUE_KIND_BGRAD), "EPILOGUE_BGRAD");
    assert_string_equal(epilogue_place_name(EPILOGUE_IN_KERNEL), "kernel");
    linear_set_epilogue_place(EPILOGUE_KIND_GELU, EPILOGUE_IN_KERNEL);
    assert_int_equal(linear_epilogue_place(EPILOGUE_KIND_GELU), EPILOGUE_IN_KERNEL);
    linear_set_epilogue_place(EPILOGUE_KIND_GELU, -1);
    // Back to the environment's: gemm unless the test was started with EPILOGUE_GELU=kernel.
    const char *env = getenv("EPILOGUE_GELU");
    assert_int_equal(linear_epilogue_place(EPILOGUE_KIND_GELU),
                     env && !strcmp(env, "kernel") ? EPILOGUE_IN_KERNEL : EPILOGUE_IN_GEMM);
}

// What the GEMMs may use: every reduction scheme by default, all but the in-place one when
// deterministic (no GPU needed).
static void test_gemm_reduction_schemes(void **state) {
    (void)state;
    assert_int_equal(gemm_reduction_schemes(), CUBLASLT_REDUCTION_SCHEME_MASK);
    gemm_set_deterministic(1);
    assert_int_equal(gemm_deterministic(), 1);
    assert_int_equal(gemm_reduction_schemes() & CUBLASLT_REDUCTION_SCHEME_INPLACE, 0);
    assert_int_equal(gemm_reduction_schemes() | CUBLASLT_REDUCTION_SCHEME_INPLACE, CUBLASLT_REDUCTION_SCHEME_MASK);
    gemm_set_deterministic(0);
    assert_int_equal(gemm_reduction_schemes(), CUBLASLT_REDUCTION_SCHEME_MASK);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm_reduction_schemes),
        cmocka_unit_test(test_deterministic_steps),
        cmocka_unit_test(test_linear),
        cmocka_unit_test(test_layernorm),
        cmocka_unit_test(test_layernorm_shared_memory_limit),
        cmocka_unit_test(test_layernorm_mlp_and_linear),
        cmocka_unit_test(test_steps),
        cmocka_unit_test(test_epilogue_places),
        cmocka_unit_test(test_epilogues_in_kernels),
        cmocka_unit_test(test_overlap_wgrad),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
