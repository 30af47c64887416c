// The unfused attention module (kernels/naive/naive_attention.h) against the CPU reference
// attention, fp16 and bf16, with dropout, causal and not. This is also the test of the
// row-major / column-major mapping of the six batched cuBLAS products: a wrong leading
// dimension, stride or transpose scrambles q, k, v or the heads and the error is O(1).
//
// Tolerances: the GPU rounds the scores, the probabilities, the dropped probabilities and
// the output to 16 bits (backward: dD, dP, dS and the result too), each a relative 2^-11
// (fp16) or 2^-8 (bf16); the norm-wise error is a few of those.
#include <stdlib.h>
#include <string.h>

#include "common/gpu/gpu.h"
#include "common/core/philox.h"
#include "reference/reference.h"
#include "kernels/naive/naive_attention.h"
#include "tests/test_util.h"

static double tol_forward(DType dt) { return dt == DTYPE_BF16 ? 2e-2 : 3e-3; }
static double tol_backward(DType dt) { return dt == DTYPE_BF16 ? 3e-2 : 5e-3; }

static void run_case(int seq, int batch, int heads, int head_dim, DType dt, float p, int causal) {
    print_message("  seq %d batch %d heads %d d %d %s p=%.2f%s\n", seq, batch, heads, head_dim,
                  dtype_name(dt), p, causal ? " causal" : "");
    LayerConfig cfg = layer_config_quickstart();
    cfg.seq = seq, cfg.batch = batch, cfg.heads = heads, cfg.hidden = heads * head_dim;
    cfg.dtype = dt, cfg.attn_dropout = p, cfg.causal = causal, cfg.seed = test_seed() + 99;
    const uint64_t offset = dropout_offset(3, DROPOUT_SITE_ATTENTION);
    const int64_t n_qkv = (int64_t)seq * batch * heads * 3 * head_dim;
    const int64_t n_ctx = (int64_t)seq * batch * heads * head_dim;
    const int64_t n_probs = (int64_t)batch * heads * seq * seq;

    float *qkv = random_floats(n_qkv, -2, 2), *dctx = random_floats(n_ctx, -1, 1);
    round_to_dtype(qkv, n_qkv, dt);
    round_to_dtype(dctx, n_ctx, dt);
    float *ctx = malloc(n_ctx * sizeof(float)), *probs = malloc(n_probs * sizeof(float));
    float *dqkv = malloc(n_qkv * sizeof(float));
    ref_attention_forward(qkv, seq, batch, heads, head_dim, p, causal, cfg.seed, offset, ctx, probs);
    ref_attention_backward(dctx, qkv, probs, seq, batch, heads, head_dim, p, causal, cfg.seed, offset, dqkv);

    NaiveAttention a;
    naive_attention_init(&a, &cfg);
    void *d_qkv = dev_upload(qkv, n_qkv, dt), *d_dctx = dev_upload(dctx, n_ctx, dt);
    void *d_ctx = dev_alloc(n_ctx * 2), *d_dqkv = dev_alloc(n_qkv * 2);
    naive_attention_forward(&a, d_qkv, d_ctx, offset);
    naive_attention_backward(&a, d_qkv, d_dctx, d_dqkv, offset);

    float *got_ctx = malloc(n_ctx * sizeof(float)), *got_probs = malloc(n_probs * sizeof(float));
    float *got_dqkv = malloc(n_qkv * sizeof(float));
    dev_download(got_ctx, d_ctx, n_ctx, dt);
    dev_download(got_probs, a.probs, n_probs, dt);
    dev_download(got_dqkv, d_dqkv, n_qkv, dt);
    assert_rel_error(got_probs, probs, n_probs, tol_forward(dt));
    assert_rel_error(got_ctx, ctx, n_ctx, tol_forward(dt));
    assert_rel_error(got_dqkv, dqkv, n_qkv, tol_backward(dt));
    // q, k and v gradients separately, so a failure says which product is wrong.
    const int64_t tokens_heads = (int64_t)seq * batch * heads;
    const char *names[3] = {"dq", "dk", "dv"};
    float *part_got = malloc(n_ctx * sizeof(float)), *part_ref = malloc(n_ctx * sizeof(float));
    for (int part = 0; part < 3; part++) {
        for (int64_t r = 0; r < tokens_heads; r++) {
            memcpy(part_got + r * head_dim, got_dqkv + (r * 3 + part) * head_dim, head_dim * sizeof(float));
            memcpy(part_ref + r * head_dim, dqkv + (r * 3 + part) * head_dim, head_dim * sizeof(float));
        }
        print_message("  %s:", names[part]);
        assert_rel_error(part_got, part_ref, n_ctx, tol_backward(dt));
    }

    naive_attention_free(&a);
    dev_free(d_qkv); dev_free(d_dctx); dev_free(d_ctx); dev_free(d_dqkv);
    float *hs[] = {qkv, dctx, ctx, probs, dqkv, got_ctx, got_probs, got_dqkv, part_got, part_ref};
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) free(hs[i]);
}

static void test_attention_fp16(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    run_case(64, 2, 3, 32, DTYPE_FP16, 0.1f, 0);
    run_case(64, 2, 3, 32, DTYPE_FP16, 0.1f, 1);
    run_case(37, 3, 2, 64, DTYPE_FP16, 0.0f, 0);  // odd seq: rows don't align to the Philox groups
    run_case(37, 3, 2, 64, DTYPE_FP16, 0.2f, 1);
}

static void test_attention_bf16(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    run_case(64, 2, 3, 32, DTYPE_BF16, 0.1f, 0);
    run_case(64, 2, 3, 32, DTYPE_BF16, 0.1f, 1);
    run_case(37, 3, 2, 64, DTYPE_BF16, 0.2f, 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attention_fp16),
        cmocka_unit_test(test_attention_bf16),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
