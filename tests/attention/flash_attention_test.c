// Flash attention against the CPU reference: several shapes (seq not a multiple of the
// 64- and 128-wide tiles included), head dims 64 and 128, fp16 and bf16, with and without
// dropout and the causal mask, each through both sets of kernels (Hopper's wgmma ones and
// the mma.sync ones). Outputs are poisoned with NaN first, so an element the kernels forget
// to write fails the test. The dropout mask must match the reference's exactly: a different
// mask would put the error near 10%, far above the tolerances.
#include <math.h>
#include <stdlib.h>

#include "common/core/tolerance.h"
#include "common/gpu/cuda_check.h"
#include "reference/attention_reference.h"
#include "common/gpu/gpu.h"
#include "reference/reference.h"
#include "kernels/attention/flash_attention.h"
#include "tests/test_util.h"

// fp16 inputs and P rounded to 16 bits before P V; float accumulation. Backward goes
// through two more 16-bit roundings (P and dS in shared memory).
static double tol_fwd(DType dt) { return dt == DTYPE_BF16 ? 2e-2 : 3e-3; }
static double tol_bwd(DType dt) { return dt == DTYPE_BF16 ? 3e-2 : 6e-3; }

static void run_case_with(FlashKernels kernels, DType dt, int seq, int batch, int heads, int d, float p,
                          int causal) {
    flash_attention_set_kernels(kernels);
    const int64_t nqkv = (int64_t)seq * batch * heads * 3 * d, nctx = nqkv / 3;
    const uint64_t seed = test_seed(), offset = 3;
    float *qkv = random_floats(nqkv, -2.0f, 2.0f), *dctx = random_floats(nctx, -1.0f, 1.0f);
    round_to_dtype(qkv, nqkv, dt);
    round_to_dtype(dctx, nctx, dt);
    float *ctx = malloc(nctx * 4), *dqkv = malloc(nqkv * 4), *lse = malloc((size_t)seq * batch * heads * 4);
    float *probs = malloc((size_t)batch * heads * seq * seq * 4), *tmp = malloc(nctx * 4);
    ref_attention_forward(qkv, seq, batch, heads, d, p, causal, seed, offset, ctx, probs);
    ref_attention_backward(dctx, qkv, probs, seq, batch, heads, d, p, causal, seed, offset, dqkv);
    ref_flash_attention_forward(qkv, seq, batch, heads, d, p, causal, seed, offset, 64, tmp, lse);

    void *d_qkv = dev_upload(qkv, nqkv, dt), *d_dctx = dev_upload(dctx, nctx, dt);
    void *d_ctx = dev_alloc(nctx * 2), *d_dqkv = dev_alloc(nqkv * 2);
    float *d_lse = dev_alloc((size_t)seq * batch * heads * 4);
    void *scratch = dev_alloc(flash_attention_backward_scratch_bytes(seq, batch, heads, d));
    CUDA_CHECK(cudaMemset(d_ctx, 0xff, nctx * 2));  // NaN in fp16 and bf16
    CUDA_CHECK(cudaMemset(d_dqkv, 0xff, nqkv * 2));
    flash_attention_forward(d_qkv, d_ctx, d_lse, seq, batch, heads, d, dt, p, causal, seed, offset);
    flash_attention_backward(d_qkv, d_ctx, d_dctx, d_lse, d_dqkv, scratch, seq, batch, heads, d, dt, p, causal,
                             seed, offset);
    print_message(" %s kernels, %s seq %d batch %d heads %d d %d dropout %.1f causal %d\n",
                  kernels == FLASH_KERNELS_WGMMA ? "wgmma" : "mma.sync", dtype_name(dt), seq, batch, heads, d, p,
                  causal);
    float *got = malloc(nqkv * 4);
    dev_download(got, d_ctx, nctx, dt);
    assert_rel_error(got, ctx, nctx, tol_fwd(dt));
    float *got_lse = malloc((size_t)seq * batch * heads * 4);
    dev_download_f32(got_lse, d_lse, (int64_t)seq * batch * heads);
    assert_rel_error(got_lse, lse, (int64_t)seq * batch * heads, 1e-4);
    dev_download(got, d_dqkv, nqkv, dt);
    assert_rel_error(got, dqkv, nqkv, tol_bwd(dt));
    dev_free(d_qkv), dev_free(d_dctx), dev_free(d_ctx), dev_free(d_dqkv), dev_free(d_lse), dev_free(scratch);
    free(qkv), free(dctx), free(ctx), free(dqkv), free(lse), free(probs), free(tmp), free(got), free(got_lse);
}

// Both sets of kernels: wgmma (on a GPU that has it) and mma.sync.
static void run_case(DType dt, int seq, int batch, int heads, int d, float p, int causal) {
    run_case_with(FLASH_KERNELS_WGMMA, dt, seq, batch, heads, d, p, causal);
    run_case_with(FLASH_KERNELS_MMA_SYNC, dt, seq, batch, heads, d, p, causal);
    flash_attention_set_kernels(FLASH_KERNELS_WGMMA);
}

static void test_plain(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    run_case(DTYPE_FP16, 128, 2, 2, 64, 0.0f, 0);
    run_case(DTYPE_FP16, 128, 1, 2, 128, 0.0f, 0);
    run_case(DTYPE_BF16, 256, 1, 2, 64, 0.0f, 0);
}

static void test_ragged_seq(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    run_case(DTYPE_FP16, 200, 2, 3, 64, 0.0f, 0);
    run_case(DTYPE_BF16, 77, 1, 2, 128, 0.0f, 1);
}

static void test_causal(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    run_case(DTYPE_FP16, 256, 1, 2, 128, 0.0f, 1);
    run_case(DTYPE_BF16, 130, 2, 2, 64, 0.0f, 1);
}

static void test_dropout(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    run_case(DTYPE_FP16, 128, 2, 2, 64, 0.1f, 0);
    run_case(DTYPE_FP16, 200, 1, 3, 128, 0.1f, 1);
    run_case(DTYPE_BF16, 150, 2, 2, 128, 0.2f, 0);
    run_case(DTYPE_FP16, 77, 2, 2, 64, 0.1f, 0);  // seq odd: Philox groups straddle the columns
    run_case(DTYPE_BF16, 77, 1, 1, 64, 0.0f, 0);  // an odd number of queries in all
    run_case(DTYPE_FP16, 520, 1, 2, 128, 0.1f, 1);  // many key tiles, the last one ragged
}

// Heads [first, first + hl) of a [seq, batch, heads, width] tensor, as a tensor of their own.
static float *head_slice(const float *x, int64_t tokens, int heads, int width, int first, int hl) {
    float *out = malloc((size_t)(tokens * hl * width) * sizeof(float));
    for (int64_t t = 0; t < tokens; t++)
        for (int k = 0; k < hl * width; k++) out[t * hl * width + k] = x[(t * heads + first) * width + k];
    return out;
}

// Tensor parallelism (step 07): a rank computes heads [first, first + hl) of the layer on its
// own q, k, v. With the shard entry points it must reproduce exactly those heads of the
// unsharded run, dropout included; keyed by local head indices (the plain entry points), rank
// 1 would draw rank 0's masks - the test shows that gives a different answer.
static void test_shard_draws_the_unsharded_mask(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    const DType dt = DTYPE_FP16;
    const int seq = 77, batch = 2, heads = 4, d = 64, tp = 2, hl = heads / tp;
    const float p = 0.1f;
    const uint64_t seed = test_seed(), offset = 5;
    const int64_t T = (int64_t)seq * batch, nqkv = T * heads * 3 * d, nctx = nqkv / 3;
    float *qkv = random_floats(nqkv, -2.0f, 2.0f), *dctx = random_floats(nctx, -1.0f, 1.0f);
    round_to_dtype(qkv, nqkv, dt);
    round_to_dtype(dctx, nctx, dt);
    // The unsharded run, on the GPU.
    void *d_qkv = dev_upload(qkv, nqkv, dt), *d_dctx = dev_upload(dctx, nctx, dt);
    void *d_ctx = dev_alloc(nctx * 2), *d_dqkv = dev_alloc(nqkv * 2);
    float *d_lse = dev_alloc((size_t)T * heads * 4);
    void *scratch = dev_alloc(flash_attention_backward_scratch_bytes(seq, batch, heads, d));
    flash_attention_forward(d_qkv, d_ctx, d_lse, seq, batch, heads, d, dt, p, 0, seed, offset);
    flash_attention_backward(d_qkv, d_ctx, d_dctx, d_lse, d_dqkv, scratch, seq, batch, heads, d, dt, p, 0, seed,
                             offset);
    float *ctx = malloc(nctx * 4), *dqkv = malloc(nqkv * 4);
    dev_download(ctx, d_ctx, nctx, dt);
    dev_download(dqkv, d_dqkv, nqkv, dt);
    for (int rank = 0; rank < tp; rank++) {
        const int first = rank * hl;
        float *s_qkv = head_slice(qkv, T, heads, 3 * d, first, hl), *s_dctx = head_slice(dctx, T, heads, d, first, hl);
        float *want_ctx = head_slice(ctx, T, heads, d, first, hl), *want_dqkv = head_slice(dqkv, T, heads, 3 * d, first, hl);
        const int64_t sq = T * hl * 3 * d, sc = sq / 3;
        void *e_qkv = dev_upload(s_qkv, sq, dt), *e_dctx = dev_upload(s_dctx, sc, dt);
        void *e_ctx = dev_alloc(sc * 2), *e_dqkv = dev_alloc(sq * 2);
        float *e_lse = dev_alloc((size_t)T * hl * 4);
        void *e_scratch = dev_alloc(flash_attention_backward_scratch_bytes(seq, batch, hl, d));
        flash_attention_forward_shard(e_qkv, e_ctx, e_lse, seq, batch, hl, heads, first, d, dt, p, 0, seed, offset);
        flash_attention_backward_shard(e_qkv, e_ctx, e_dctx, e_lse, e_dqkv, e_scratch, seq, batch, hl, heads, first,
                                       d, dt, p, 0, seed, offset);
        float *got = malloc(sq * 4);
        dev_download(got, e_ctx, sc, dt);
        print_message(" rank %d of %d: heads [%d, %d)\n", rank, tp, first, first + hl);
        assert_rel_error(got, want_ctx, sc, 1e-6);
        dev_download(got, e_dqkv, sq, dt);
        assert_rel_error(got, want_dqkv, sq, 1e-6);
        if (rank > 0) {  // keyed by the local head index instead: another mask, another answer
            flash_attention_forward(e_qkv, e_ctx, e_lse, seq, batch, hl, d, dt, p, 0, seed, offset);
            dev_download(got, e_ctx, sc, dt);
            double err = rel_error(got, want_ctx, sc);
            print_message(" rank %d keyed by local heads: rel. error %.2e (must be large)\n", rank, err);
            assert_true(err > 1e-2);
        }
        dev_free(e_qkv), dev_free(e_dctx), dev_free(e_ctx), dev_free(e_dqkv), dev_free(e_lse), dev_free(e_scratch);
        free(s_qkv), free(s_dctx), free(want_ctx), free(want_dqkv), free(got);
    }
    dev_free(d_qkv), dev_free(d_dctx), dev_free(d_ctx), dev_free(d_dqkv), dev_free(d_lse), dev_free(scratch);
    free(qkv), free(dctx), free(ctx), free(dqkv);
}

static void test_unsupported_head_dim(void **state) {
    (void)state;
    assert_non_null(flash_attention_unsupported(96));
    assert_null(flash_attention_unsupported(64));
    assert_null(flash_attention_unsupported(128));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unsupported_head_dim), cmocka_unit_test(test_plain),
        cmocka_unit_test(test_ragged_seq),           cmocka_unit_test(test_causal),
        cmocka_unit_test(test_dropout),              cmocka_unit_test(test_shard_draws_the_unsharded_mask),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
