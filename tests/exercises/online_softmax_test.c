// Graded: exercise "online_softmax" (exercises/online_softmax.c).
//
// Attention computed block by block with the online softmax must equal the plain
// reference (ref_attention_forward, which materialises whole rows of scores), for any block
// size. Each test case is one point.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "reference/attention_reference.h"
#include "reference/reference.h"
#include "tests/exercises/grading.h"
#include "tests/test_util.h"

enum { BATCH = 2 };
#define TOLERANCE 1e-5

// The online softmax's attention output for keys in blocks of `block` (fresh NaN-filled ctx).
static float *flash_output(const float *qkv, int seq, int heads, int d, int block, float p, int causal) {
    const int64_t nctx = (int64_t)seq * BATCH * heads * d;
    float *got = malloc(nctx * sizeof(float));
    fill_nan(got, nctx);
    ref_flash_attention_forward(qkv, seq, BATCH, heads, d, p, causal, 5, 9, block, got, NULL);
    return got;
}

static void compare_case(int seq, int heads, int d, int block, float p, int causal) {
    int64_t nqkv = (int64_t)seq * BATCH * heads * 3 * d, nctx = nqkv / 3;
    float *qkv = random_floats(nqkv, -2, 2);
    float *want = malloc(nctx * sizeof(float));
    float *probs = malloc((size_t)BATCH * heads * seq * seq * sizeof(float));
    ref_attention_forward(qkv, seq, BATCH, heads, d, p, causal, 5, 9, want, probs);
    float *got = flash_output(qkv, seq, heads, d, block, p, causal);
    // Wrong in blocks: is the same input right with every key in one block? Then what goes wrong
    // is what happens between blocks, when the running max changes.
    const char *hint = NULL;
    char one_block_right[300];
    if (block < seq && !(relative_error(got, want, nctx) <= TOLERANCE)) {
        float *whole = flash_output(qkv, seq, heads, d, seq, p, causal);
        if (relative_error(whole, want, nctx) <= TOLERANCE) {
            snprintf(one_block_right, sizeof one_block_right, "Right with all %d keys in one block but wrong in "
                     "blocks of %d: when a block raised the running max, did you rescale what you had summed "
                     "so far (the sum and the output accumulator) to the new max?", seq, block);
            hint = one_block_right;
        }
        free(whole);
    }
    char what[160];
    snprintf(what, sizeof what, "the attention output (rows: tokens; seq %d, heads %d, head_dim %d, keys in blocks "
             "of %d, dropout %.1f, causal %d)", seq, heads, d, block, p, causal);
    expect_close(what, got, want, (int64_t)seq * BATCH, (int64_t)heads * d, TOLERANCE, hint);
    free(qkv), free(want), free(got), free(probs);
}

static void test_one_block(void **state) {
    (void)state;
    compare_case(16, 2, 8, 16, 0.0f, 0);  // all keys in one block: a plain softmax
}

static void test_many_blocks(void **state) {
    (void)state;
    compare_case(40, 2, 8, 8, 0.0f, 0);  // the running max must rescale earlier blocks
}

static void test_ragged_blocks_causal(void **state) {
    (void)state;
    compare_case(37, 3, 16, 5, 0.0f, 1);  // a last partial block; causal rows end early
}

static void test_dropout(void **state) {
    (void)state;
    compare_case(33, 2, 8, 4, 0.2f, 0);  // dropped keys still count in the normaliser
}

// The logsumexp (what the backward pass uses) is max + log(sum of exp(scores)).
static void test_logsumexp(void **state) {
    (void)state;
    const int seq = 20, d = 8;
    float *qkv = random_floats((int64_t)seq * 3 * d, -2, 2);
    float *ctx = malloc((size_t)seq * d * sizeof(float)), lse[20];
    fill_nan(ctx, (int64_t)seq * d);
    ref_flash_attention_forward(qkv, seq, 1, 1, d, 0.0f, 0, 1, 1, 6, ctx, lse);
    for (int i = 0; i < seq; i++) {
        double s = 0;
        for (int j = 0; j < seq; j++) {
            double dot = 0;
            for (int t = 0; t < d; t++) dot += (double)qkv[i * 3 * d + t] * qkv[j * 3 * d + d + t];
            s += exp(dot / sqrt((double)d));
        }
        expect_true(fabs(lse[i] - log(s)) < 1e-4, "logsumexp of query %d (20 keys in blocks of 6): got %.6f, "
                    "expected log(sum_j exp(score_j)) = %.6f", i, lse[i], log(s));
    }
    free(qkv), free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_block),          cmocka_unit_test(test_many_blocks),
        cmocka_unit_test(test_ragged_blocks_causal), cmocka_unit_test(test_dropout),
        cmocka_unit_test(test_logsumexp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
