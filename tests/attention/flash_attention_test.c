// Flash attention (kernels/attention/attention.h) against the CPU reference: several shapes
// (seq not a multiple of the 64- and 128-wide tiles included), head dims 64 and 128, fp16
// and bf16, with and without dropout and the causal mask, each through every set of kernels
// (the best this GPU runs - Hopper's wgmma ones on an H100 -, the mma.sync ones with an A100's
// tiles, and with the tiles of a 99 KiB sm_86 / sm_89 GPU). Outputs are poisoned with NaN
// first, so an element the kernels forget to write fails the test. The dropout mask must
// match the reference's exactly: a different mask would put the error near 10%, far above
// the tolerances. Views into wider tensors (row strides) and tensor-parallel shards must
// reproduce the plain run exactly. The deterministic backward (AttentionProblem.deterministic)
// must match the reference too, and repeat its bits exactly from run to run. The best set's
// backward at d 64 is the one ATTENTION_D64_BACKWARD picks (attention.h): run the test once
// per value (unset, wgmma-turns) to check each. The wgmma forward runs persistent wherever it
// can and never (ATTENTION_FORWARD_PERSISTENT), the persistent one with both schedules
// (ATTENTION_PERSISTENT_SCHEDULE) and few CTAs so that each loops over several work tiles, and
// must give the same bits every way. The best set's backward runs with the swapAB kernel off and
// on (ATTENTION_BACKWARD_SWAPAB, through its setter), deterministic and dropping too; at d 128
// also with the warp-specialised kernels (ATTENTION_BACKWARD_WS, through its setter: 80-query
// tiles, 64 when dropping; test_backward_ws_swapab80 runs each kernel in every case) wherever
// the wgmma backward runs, dropping, causal, ragged, on views and shards, and against the
// deterministic kernel at training size. The wgmma forward at d 128 also with 176-key tiles
// (ATTENTION_FORWARD_BLOCK_N, through its setter): never persistent and persistent with both
// schedules, seq ragged against 176 (test_forward_wide_tiles), bit for bit between its
// persistent and non-persistent kernels, and with a row's last tile narrower than 176 keys bit
// for bit as with a full-width one (test_wide_last_tile_bits); where the tiles do not apply
// (causal, dropout) the 128-key kernel must run (the 176-key one stops on such a problem).
#include <fnmatch.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/half.h"
#include "common/core/tolerance.h"
#include "common/gpu/cuda_check.h"
#include "reference/attention_reference.h"
#include "common/gpu/gpu.h"
#include "reference/reference.h"
#include "kernels/attention/attention.h"
#include "tests/test_util.h"

// fp16 inputs and P rounded to 16 bits before P V; float accumulation. Backward goes
// through two more 16-bit roundings (P and dS in shared memory).
static double tol_fwd(DType dt) { return dt == DTYPE_BF16 ? 2e-2 : 3e-3; }
static double tol_bwd(DType dt) { return dt == DTYPE_BF16 ? 3e-2 : 6e-3; }

static const char *const SET_NAMES[] = {"best", "mma.sync", "mma.sync small tiles"};

static void run_case_with(AttentionKernels kernels, DType dt, int seq, int batch, int heads, int d, float p,
                          int causal) {
    attention_set_kernels(kernels);
    const AttentionProblem problem = {
        .seq = seq, .batch = batch, .heads = heads, .head_dim = d, .dtype = dt, .causal = causal};
    const int64_t nqkv = (int64_t)seq * batch * heads * 3 * d, nctx = nqkv / 3;
    const uint64_t seed = test_seed(), offset = 3;
    const AttentionDropout dropout = {p, seed, offset};
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
    void *scratch = dev_alloc(attention_backward_workspace_bytes(&problem));
    CUDA_CHECK(cudaMemset(d_ctx, 0xff, nctx * 2));  // NaN in fp16 and bf16
    CUDA_CHECK(cudaMemset(d_dqkv, 0xff, nqkv * 2));
    attention_forward(&problem, &dropout, d_qkv, d_ctx, d_lse);
    attention_backward(&problem, &dropout, d_qkv, d_ctx, d_dctx, d_lse, d_dqkv, scratch);
    print_message(" %s: %s; %s; %s seq %d batch %d heads %d d %d dropout %.1f causal %d\n", SET_NAMES[kernels],
                  attention_kernel_name(ATTENTION_FORWARD, d), attention_kernel_name(ATTENTION_BACKWARD, d),
                  dtype_name(dt), seq, batch, heads, d, p, causal);
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

// The persistent wgmma forward's CTAs in the tests: few, so that each loops over several work
// tiles (of different lengths when causal) even in these small problems.
static const int TEST_PERSISTENT_CTAS = 3;

// Every set of kernels: the best (wgmma on a GPU that runs it), mma.sync with the largest
// tiles that fit, mma.sync with a 99 KiB GPU's tiles. The best set at d 64 with both wgmma
// forwards (two and three consumer warpgroups, ATTENTION_D64_FORWARD), when causal in every
// order of the query blocks (ATTENTION_CAUSAL_ORDER), and with the forward persistent wherever
// it can be, with the static and the dynamic schedule (ATTENTION_PERSISTENT_SCHEDULE), and never
// (ATTENTION_FORWARD_PERSISTENT); then with the swapAB backward (ATTENTION_BACKWARD_SWAPAB), in
// every causal order, and at d 128 with the warp-specialised backward (ATTENTION_BACKWARD_WS),
// in every causal order; at d 128 with 176-key tiles asked for (ATTENTION_FORWARD_BLOCK_N: run
// where neither causal nor dropping, else the 128-key kernel), never persistent and persistent
// with both schedules; all set back as they were after.
static void run_case(DType dt, int seq, int batch, int heads, int d, float p, int causal) {
    const AttentionD64Forward forwards[] = {ATTENTION_D64_FORWARD_WG2, ATTENTION_D64_FORWARD_WG3};
    const AttentionCausalOrder orders[] = {ATTENTION_CAUSAL_HEAVY_FIRST, ATTENTION_CAUSAL_NATURAL,
                                           ATTENTION_CAUSAL_HEAVY_FIRST_PER_HEAD};
    const AttentionD64Forward forward_was = attention_set_d64_forward(ATTENTION_D64_FORWARD_WG2);
    const AttentionCausalOrder order_was = attention_set_causal_order(ATTENTION_CAUSAL_HEAVY_FIRST);
    const AttentionForwardPersistent persistent_was = attention_set_forward_persistent(ATTENTION_PERSISTENT_NEVER, 0);
    const AttentionPersistentSchedule schedule_was = attention_set_persistent_schedule(ATTENTION_SCHEDULE_STATIC);
    for (int f = 0; f < (d == 64 ? 2 : 1); f++)
        for (int o = 0; o < (causal ? 3 : 1); o++)
            for (int pe = 0; pe < 3; pe++) {  // never persistent; persistent static; persistent dynamic
                attention_set_d64_forward(forwards[f]);
                attention_set_causal_order(orders[o]);
                attention_set_forward_persistent(pe ? ATTENTION_PERSISTENT_WHERE_SUPPORTED : ATTENTION_PERSISTENT_NEVER,
                                                 pe ? TEST_PERSISTENT_CTAS : 0);
                attention_set_persistent_schedule(pe == 2 ? ATTENTION_SCHEDULE_DYNAMIC : ATTENTION_SCHEDULE_STATIC);
                if (causal) print_message(" causal order %d (attention.h's AttentionCausalOrder):\n", o);
                if (pe)
                    print_message(" persistent forward where it can be, %s schedule, at most %d CTAs:\n",
                                  pe == 2 ? "dynamic" : "static", TEST_PERSISTENT_CTAS);
                run_case_with(ATTENTION_KERNELS_BEST, dt, seq, batch, heads, d, p, causal);
            }
    // The swapAB backward (ATTENTION_BACKWARD_SWAPAB), dropping or not, when causal in every order
    // of the key blocks.
    const AttentionBackwardSwapAB swapab_was = attention_set_backward_swapab(ATTENTION_SWAPAB_WHERE_SUPPORTED);
    attention_set_forward_persistent(ATTENTION_PERSISTENT_NEVER, 0);
    for (int o = 0; o < (causal ? 3 : 1); o++) {
        attention_set_causal_order(orders[o]);
        print_message(" swapAB backward%s:\n", causal ? ", causal order above" : "");
        run_case_with(ATTENTION_KERNELS_BEST, dt, seq, batch, heads, d, p, causal);
    }
    attention_set_backward_swapab(swapab_was);
    // The 176-key tiles (ATTENTION_FORWARD_BLOCK_N, d 128 only): never persistent; persistent,
    // static; persistent, dynamic.
    const AttentionForwardBlockN block_n_was = attention_set_forward_block_n(ATTENTION_FORWARD_BLOCK_N_176);
    attention_set_causal_order(ATTENTION_CAUSAL_HEAVY_FIRST);
    for (int pe = 0; pe < (d == 128 ? 3 : 0); pe++) {
        attention_set_forward_persistent(pe ? ATTENTION_PERSISTENT_WHERE_SUPPORTED : ATTENTION_PERSISTENT_NEVER,
                                         pe ? TEST_PERSISTENT_CTAS : 0);
        attention_set_persistent_schedule(pe == 2 ? ATTENTION_SCHEDULE_DYNAMIC : ATTENTION_SCHEDULE_STATIC);
        print_message(" 176-key tiles asked for, %s:\n", pe == 0 ? "never persistent" : pe == 1 ? "persistent static"
                                                                                         : "persistent dynamic");
        run_case_with(ATTENTION_KERNELS_BEST, dt, seq, batch, heads, d, p, causal);
    }
    attention_set_forward_block_n(block_n_was);
    attention_set_forward_persistent(ATTENTION_PERSISTENT_NEVER, 0);
    attention_set_persistent_schedule(ATTENTION_SCHEDULE_STATIC);
    // The warp-specialised backward (ATTENTION_BACKWARD_WS, d 128 only), in every causal order;
    // not causal, one block per CTA and persistent (ATTENTION_BACKWARD_PERSISTENT) on
    // TEST_PERSISTENT_CTAS CTAs, so that each runs several blocks.
    const AttentionBackwardWS ws_was = attention_set_backward_ws(ATTENTION_BACKWARD_WS_ON);
    const AttentionBackwardPersistent bp_was =
        attention_set_backward_persistent(ATTENTION_BACKWARD_PERSISTENT_OFF, 0);
    for (int o = 0; o < (d == 128 ? (causal ? 3 : 1) : 0); o++)
        for (int bp = 0; bp < (causal ? 1 : 2); bp++) {
            attention_set_causal_order(orders[o]);
            attention_set_backward_persistent(bp ? ATTENTION_BACKWARD_PERSISTENT_ON : ATTENTION_BACKWARD_PERSISTENT_OFF,
                                              bp ? TEST_PERSISTENT_CTAS : 0);
            print_message(" warp-specialised backward%s%s:\n", causal ? ", causal order above" : "",
                          bp ? ", persistent on a few CTAs" : "");
            run_case_with(ATTENTION_KERNELS_BEST, dt, seq, batch, heads, d, p, causal);
        }
    attention_set_backward_persistent(bp_was, 0);
    attention_set_backward_ws(ws_was);
    attention_set_d64_forward(forward_was);
    attention_set_causal_order(order_was);
    attention_set_forward_persistent(persistent_was, 0);
    attention_set_persistent_schedule(schedule_was);
    run_case_with(ATTENTION_KERNELS_MMA_SYNC, dt, seq, batch, heads, d, p, causal);
    run_case_with(ATTENTION_KERNELS_MMA_SYNC_SMALL_TILES, dt, seq, batch, heads, d, p, causal);
    attention_set_kernels(ATTENTION_KERNELS_BEST);
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
    // One block of 128 keys whose second half lies wholly past seq (the wgmma backward at d 64:
    // a warpgroup without keys, which must add nothing to dQ).
    run_case(DTYPE_FP16, 60, 2, 2, 64, 0.1f, 0);
    run_case(DTYPE_BF16, 190, 1, 2, 64, 0.0f, 1);
    // Three consumers at d 64 (192 queries per block): seq not a multiple of 192 or 128, a last
    // block with one consumer's rows only (400 = 2 * 192 + 16), causal and dropout, both dtypes.
    run_case(DTYPE_FP16, 400, 1, 3, 64, 0.1f, 1);
    run_case(DTYPE_BF16, 400, 2, 2, 64, 0.1f, 1);
    run_case(DTYPE_BF16, 330, 2, 2, 64, 0.1f, 0);  // 330 = 192 + 138: two consumers' rows in the last
    run_case(DTYPE_FP16, 520, 1, 2, 64, 0.0f, 1);  // many key tiles, the last one ragged
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
    run_case(DTYPE_BF16, 333, 2, 2, 128, 0.1f, 1);  // bf16 at d 128, causal, ragged
}

// The best set's backward with ATTENTION_BACKWARD_SWAPAB never and where supported
// (attention_set_backward_swapab, set back after), against the reference: both head dims and
// dtypes, causal or not, seq a multiple of the 128 keys of a block, ragged (1000 = 7 * 128 +
// 104; 333; 129, one key in the second block), and shorter than a block (60: the second
// warpgroup's keys all past seq; at d 64 the second warpgroup's 64 queries of the 128-query
// tile too); without dropout, with p 0.1 and with p 0.5 (half the probabilities dropped: a mask
// that differs from the forward's anywhere shows). At d 64, not causal, a
// third run with swapAB persistent on TEST_PERSISTENT_CTAS CTAs (ATTENTION_BACKWARD_PERSISTENT:
// several blocks each, so the double-buffered K and V and the query tiles counted across blocks
// are used). At d 128 a third run with the warp-specialised backward (ATTENTION_BACKWARD_WS),
// one block per CTA, and a fourth with it persistent on TEST_PERSISTENT_CTAS CTAs (causal: the
// same kernel as the third). Where the switches do not apply (no wgmma), every run is the same
// kernel.
static void test_backward_swapab(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    const int seqs[] = {256, 1000, 333, 129, 60};
    const float drops[] = {0.0f, 0.1f, 0.5f};
    const AttentionBackwardSwapAB swapab_was = attention_set_backward_swapab(ATTENTION_SWAPAB_NEVER);
    const AttentionBackwardWS ws_was = attention_set_backward_ws(ATTENTION_BACKWARD_WS_OFF);
    const AttentionBackwardPersistent bp_was =
        attention_set_backward_persistent(ATTENTION_BACKWARD_PERSISTENT_OFF, 0);
    for (int si = 0; si < 5; si++)
        for (int d = 64; d <= 128; d += 64)
            for (int causal = 0; causal < 2; causal++)
                for (int pi = 0; pi < 3; pi++)
                    // swapAB off; on; d 64: swapAB persistent (where it runs so), d 128:
                    // warp-specialised, warp-specialised persistent
                    for (int run = 0; run < (d == 128 ? 4 : 3); run++) {
                        if (d == 64 && run == 2 && causal) continue;  // not persistent there
                        const DType dt = (si + causal + pi) % 2 ? DTYPE_BF16 : DTYPE_FP16;
                        const int swapab = run == 1 || (d == 64 && run == 2), ws = d == 128 && run >= 2;
                        const int persistent = d == 64 ? run == 2 : run == 3;
                        attention_set_backward_swapab(swapab ? ATTENTION_SWAPAB_WHERE_SUPPORTED : ATTENTION_SWAPAB_NEVER);
                        attention_set_backward_ws(ws ? ATTENTION_BACKWARD_WS_ON : ATTENTION_BACKWARD_WS_OFF);
                        attention_set_backward_persistent(
                            persistent ? ATTENTION_BACKWARD_PERSISTENT_ON : ATTENTION_BACKWARD_PERSISTENT_OFF,
                            persistent ? TEST_PERSISTENT_CTAS : 0);
                        run_case_with(ATTENTION_KERNELS_BEST, dt, seqs[si], 1, 2, d, drops[pi], causal);
                    }
    attention_set_backward_swapab(swapab_was);
    attention_set_backward_ws(ws_was);
    attention_set_backward_persistent(bp_was, 0);
    attention_set_kernels(ATTENTION_KERNELS_BEST);
}

// The wgmma forward with 176-key tiles (ATTENTION_FORWARD_BLOCK_N, attention_set_forward_block_n;
// set back after) at d 128, neither causal nor dropping, against the reference: seq shorter than
// a tile (60), one key into the second 128-key tile (129), exactly one tile (176), one key past
// it (177), ragged against 176 (333 = 176 + 157; 1000 = 5 * 176 + 120) and many tiles (2048 =
// 11 * 176 + 112), fp16 and bf16, each never persistent and persistent with the static and the
// dynamic schedule (few CTAs: several work tiles each). Without wgmma every run is the same
// mma.sync kernel.
static void test_forward_wide_tiles(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    const int seqs[] = {60, 129, 176, 177, 333, 1000, 2048};
    const AttentionForwardBlockN block_n_was = attention_set_forward_block_n(ATTENTION_FORWARD_BLOCK_N_176);
    const AttentionForwardPersistent persistent_was = attention_set_forward_persistent(ATTENTION_PERSISTENT_NEVER, 0);
    const AttentionPersistentSchedule schedule_was = attention_set_persistent_schedule(ATTENTION_SCHEDULE_STATIC);
    for (int si = 0; si < (int)(sizeof seqs / sizeof seqs[0]); si++)
        for (int pe = 0; pe < 3; pe++) {  // never persistent; persistent static; persistent dynamic
            const DType dt = (si + pe) % 2 ? DTYPE_BF16 : DTYPE_FP16;
            attention_set_forward_persistent(pe ? ATTENTION_PERSISTENT_WHERE_SUPPORTED : ATTENTION_PERSISTENT_NEVER,
                                             pe ? TEST_PERSISTENT_CTAS : 0);
            attention_set_persistent_schedule(pe == 2 ? ATTENTION_SCHEDULE_DYNAMIC : ATTENTION_SCHEDULE_STATIC);
            run_case_with(ATTENTION_KERNELS_BEST, dt, seqs[si], 1, 2, 128, 0.0f, 0);
        }
    attention_set_forward_block_n(block_n_was);
    attention_set_forward_persistent(persistent_was, 0);
    attention_set_persistent_schedule(schedule_was);
    attention_set_kernels(ATTENTION_KERNELS_BEST);
}

// The warp-specialised backward with 80-query swapAB tiles (ATTENTION_BACKWARD_WS on, its default;
// set back after) at d 128 against the reference, not causal (test_backward_ws_causal has the
// causal cases), first without dropout: seq shorter than a tile (60), exactly one (80), one query
// into the second (81), ragged against both 80 and 128 (333 = 4 * 80 + 13; 1000 = 12 * 80 + 40),
// and many tiles (2048), fp16 and bf16; one block per CTA and persistent on TEST_PERSISTENT_CTAS
// CTAs (several blocks each, the rings counted across blocks). Then the same shapes with
// ATTENTION_BACKWARD_WS=64 (the 64-query kernel), and both kernels dropping (the 80-query one as
// ATTENTION_BACKWARD_WS=80). Without wgmma every run is the same mma.sync kernel.
static const int WS_SEQS[] = {60, 80, 81, 333, 1000, 2048};
enum { WS_SEQ_COUNT = sizeof WS_SEQS / sizeof WS_SEQS[0] };

static void test_backward_ws_swapab80(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    const AttentionBackwardWS ws_was = attention_set_backward_ws(ATTENTION_BACKWARD_WS_ON);
    const AttentionBackwardPersistent bp_was =
        attention_set_backward_persistent(ATTENTION_BACKWARD_PERSISTENT_OFF, 0);
    for (int kernel = 0; kernel < 2; kernel++) {
        attention_set_backward_ws(kernel ? ATTENTION_BACKWARD_WS_64 : ATTENTION_BACKWARD_WS_ON);
        for (int si = 0; si < WS_SEQ_COUNT; si++)
            for (int run = 0; run < 2; run++) {  // one block per CTA; persistent
                const DType dt = (si + run) % 2 ? DTYPE_BF16 : DTYPE_FP16;
                attention_set_backward_persistent(run ? ATTENTION_BACKWARD_PERSISTENT_ON : ATTENTION_BACKWARD_PERSISTENT_OFF,
                                                  run ? TEST_PERSISTENT_CTAS : 0);
                run_case_with(ATTENTION_KERNELS_BEST, dt, WS_SEQS[si], 1, 2, 128, 0.0f, 0);
            }
    }
    // Dropping (p 0.1, and 0.5: half the probabilities dropped, a mask that differs from the
    // forward's anywhere shows): 81 and 333 queries, persistent and one block per CTA; the
    // 80-query kernel (ATTENTION_BACKWARD_WS=80; "on" runs the 64-query one when dropping) and
    // the 64-query one.
    for (int kernel = 0; kernel < 2; kernel++) {
        attention_set_backward_ws(kernel ? ATTENTION_BACKWARD_WS_64 : ATTENTION_BACKWARD_WS_80);
        for (int run = 0; run < 2; run++) {
            attention_set_backward_persistent(run ? ATTENTION_BACKWARD_PERSISTENT_ON : ATTENTION_BACKWARD_PERSISTENT_OFF,
                                              run ? TEST_PERSISTENT_CTAS : 0);
            run_case_with(ATTENTION_KERNELS_BEST, run ? DTYPE_BF16 : DTYPE_FP16, 81, 1, 2, 128, 0.5f, 0);
            run_case_with(ATTENTION_KERNELS_BEST, run ? DTYPE_FP16 : DTYPE_BF16, 333, 1, 2, 128, 0.1f, 0);
        }
    }
    attention_set_backward_ws(ws_was);
    attention_set_backward_persistent(bp_was, 0);
    attention_set_kernels(ATTENTION_KERNELS_BEST);
}

// The warp-specialised backward at d 128, causal (one block per CTA; a block's first query tile
// the one holding its first key, tiles across the diagonal masked), the shapes of
// test_backward_ws_swapab80: the 80-query kernel (ATTENTION_BACKWARD_WS on) in 80-query tiles and
// in 64-query tiles (ATTENTION_BACKWARD_CAUSAL_TILE=64), and the 64-query kernel (=64); then
// dropping (p 0.5 at 81 queries, 0.1 at 333), the 80-query kernel (=80; in 80-query tiles, the
// only ones it drops in) and the 64-query kernel.
static void test_backward_ws_causal(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    const AttentionBackwardWS ws_was = attention_set_backward_ws(ATTENTION_BACKWARD_WS_ON);
    const AttentionBackwardCausalTile tile_was = attention_set_backward_causal_tile(ATTENTION_BACKWARD_CAUSAL_TILE_80);
    const AttentionBackwardPersistent bp_was =
        attention_set_backward_persistent(ATTENTION_BACKWARD_PERSISTENT_OFF, 0);
    const struct {
        AttentionBackwardWS ws;
        AttentionBackwardCausalTile tile;
    } kernels[] = {{ATTENTION_BACKWARD_WS_ON, ATTENTION_BACKWARD_CAUSAL_TILE_80},
                   {ATTENTION_BACKWARD_WS_ON, ATTENTION_BACKWARD_CAUSAL_TILE_64},
                   {ATTENTION_BACKWARD_WS_64, ATTENTION_BACKWARD_CAUSAL_TILE_80}};
    for (int kernel = 0; kernel < 3; kernel++) {
        attention_set_backward_ws(kernels[kernel].ws);
        attention_set_backward_causal_tile(kernels[kernel].tile);
        for (int si = 0; si < WS_SEQ_COUNT; si++)
            run_case_with(ATTENTION_KERNELS_BEST, (si + kernel) % 2 ? DTYPE_BF16 : DTYPE_FP16, WS_SEQS[si], 1, 2, 128,
                          0.0f, 1);
    }
    attention_set_backward_causal_tile(ATTENTION_BACKWARD_CAUSAL_TILE_80);
    for (int kernel = 0; kernel < 2; kernel++) {
        attention_set_backward_ws(kernel ? ATTENTION_BACKWARD_WS_64 : ATTENTION_BACKWARD_WS_80);
        run_case_with(ATTENTION_KERNELS_BEST, kernel ? DTYPE_BF16 : DTYPE_FP16, 81, 1, 2, 128, 0.5f, 1);
        run_case_with(ATTENTION_KERNELS_BEST, kernel ? DTYPE_FP16 : DTYPE_BF16, 333, 1, 2, 128, 0.1f, 1);
    }
    attention_set_backward_ws(ws_was);
    attention_set_backward_causal_tile(tile_was);
    attention_set_backward_persistent(bp_was, 0);
    attention_set_kernels(ATTENTION_KERNELS_BEST);
}

// Heads [first, first + hl) of a [seq, batch, heads, width] tensor, as a tensor of their own.
static float *head_slice(const float *x, int64_t tokens, int heads, int width, int first, int hl) {
    float *out = malloc((size_t)(tokens * hl * width) * sizeof(float));
    for (int64_t t = 0; t < tokens; t++)
        for (int k = 0; k < hl * width; k++) out[t * hl * width + k] = x[(t * heads + first) * width + k];
    return out;
}

// Tensor parallelism (step 07): a rank computes heads [first, first + hl) of the layer on its
// own q, k, v. With total_heads and first_head set it must reproduce exactly those heads of
// the unsharded run, dropout included; keyed by local head indices (no head range), rank 1
// would draw rank 0's masks - the test shows that gives a different answer. (seq 77: at most
// two key blocks add into each dQ row, so the atomics' order cannot change the sums.) Both
// head dims, the best set's backward with the swapAB kernel off and on (it draws its mask
// transposed, from the same global head index), and at d 128 the warp-specialised one (ws).
static void check_shard_draws_the_unsharded_mask(int d, int swapab, int ws) {
    const AttentionBackwardSwapAB swapab_was =
        attention_set_backward_swapab(swapab ? ATTENTION_SWAPAB_WHERE_SUPPORTED : ATTENTION_SWAPAB_NEVER);
    const AttentionBackwardWS ws_was =
        attention_set_backward_ws(ws ? ATTENTION_BACKWARD_WS_ON : ATTENTION_BACKWARD_WS_OFF);
    const DType dt = DTYPE_FP16;
    const int seq = 77, batch = 2, heads = 4, tp = 2, hl = heads / tp;
    const uint64_t seed = test_seed();
    const AttentionDropout dropout = {0.1f, seed, 5};
    const int64_t T = (int64_t)seq * batch, nqkv = T * heads * 3 * d, nctx = nqkv / 3;
    float *qkv = random_floats(nqkv, -2.0f, 2.0f), *dctx = random_floats(nctx, -1.0f, 1.0f);
    round_to_dtype(qkv, nqkv, dt);
    round_to_dtype(dctx, nctx, dt);
    // The unsharded run, on the GPU.
    const AttentionProblem whole = {.seq = seq, .batch = batch, .heads = heads, .head_dim = d, .dtype = dt};
    void *d_qkv = dev_upload(qkv, nqkv, dt), *d_dctx = dev_upload(dctx, nctx, dt);
    void *d_ctx = dev_alloc(nctx * 2), *d_dqkv = dev_alloc(nqkv * 2);
    float *d_lse = dev_alloc((size_t)T * heads * 4);
    void *scratch = dev_alloc(attention_backward_workspace_bytes(&whole));
    attention_forward(&whole, &dropout, d_qkv, d_ctx, d_lse);
    attention_backward(&whole, &dropout, d_qkv, d_ctx, d_dctx, d_lse, d_dqkv, scratch);
    float *ctx = malloc(nctx * 4), *dqkv = malloc(nqkv * 4);
    dev_download(ctx, d_ctx, nctx, dt);
    dev_download(dqkv, d_dqkv, nqkv, dt);
    for (int rank = 0; rank < tp; rank++) {
        const int first = rank * hl;
        const AttentionProblem shard = {.seq = seq, .batch = batch, .heads = hl, .head_dim = d, .dtype = dt,
                                        .total_heads = heads, .first_head = first};
        float *s_qkv = head_slice(qkv, T, heads, 3 * d, first, hl), *s_dctx = head_slice(dctx, T, heads, d, first, hl);
        float *want_ctx = head_slice(ctx, T, heads, d, first, hl), *want_dqkv = head_slice(dqkv, T, heads, 3 * d, first, hl);
        const int64_t sq = T * hl * 3 * d, sc = sq / 3;
        void *e_qkv = dev_upload(s_qkv, sq, dt), *e_dctx = dev_upload(s_dctx, sc, dt);
        void *e_ctx = dev_alloc(sc * 2), *e_dqkv = dev_alloc(sq * 2);
        float *e_lse = dev_alloc((size_t)T * hl * 4);
        void *e_scratch = dev_alloc(attention_backward_workspace_bytes(&shard));
        attention_forward(&shard, &dropout, e_qkv, e_ctx, e_lse);
        attention_backward(&shard, &dropout, e_qkv, e_ctx, e_dctx, e_lse, e_dqkv, e_scratch);
        float *got = malloc(sq * 4);
        dev_download(got, e_ctx, sc, dt);
        print_message(" rank %d of %d: heads [%d, %d), d %d, %s\n", rank, tp, first, first + hl, d,
                      attention_kernel_name(ATTENTION_BACKWARD, d));
        assert_rel_error(got, want_ctx, sc, 1e-6);
        dev_download(got, e_dqkv, sq, dt);
        assert_rel_error(got, want_dqkv, sq, 1e-6);
        if (rank > 0) {  // keyed by the local head index instead: another mask, another answer
            const AttentionProblem local = {.seq = seq, .batch = batch, .heads = hl, .head_dim = d, .dtype = dt};
            attention_forward(&local, &dropout, e_qkv, e_ctx, e_lse);
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
    attention_set_backward_swapab(swapab_was);
    attention_set_backward_ws(ws_was);
}

static void test_shard_draws_the_unsharded_mask(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    for (int d = 64; d <= 128; d += 64)
        for (int swapab = 0; swapab < 2; swapab++) check_shard_draws_the_unsharded_mask(d, swapab, 0);
    check_shard_draws_the_unsharded_mask(128, 0, 1);
}

// [tokens, width] rows embedded as the first columns of [tokens, wide] rows, the rest `fill`.
static float *widen(const float *x, int64_t tokens, int64_t width, int64_t wide, float fill) {
    float *out = malloc((size_t)(tokens * wide) * sizeof(float));
    for (int64_t t = 0; t < tokens; t++)
        for (int64_t k = 0; k < wide; k++) out[t * wide + k] = k < width ? x[t * width + k] : fill;
    return out;
}

// The extra columns of a widened tensor all still hold `fill`.
static int extra_columns_hold(const float *x, int64_t tokens, int64_t width, int64_t wide, float fill) {
    for (int64_t t = 0; t < tokens; t++)
        for (int64_t k = width; k < wide; k++)
            if (x[t * wide + k] != fill) return 0;
    return 1;
}

// Views (step 06): qkv the first columns of a wider tensor, ctx, dctx and dqkv likewise, given
// by row strides. The results must be the packed run's, and the columns past the views must
// stay untouched. Every set of kernels, both head dims (seq <= 128: at most two key blocks add
// into a dQ row, so the atomics' order cannot change the sums); at d 128 also the best set with
// the warp-specialised backward (ATTENTION_BACKWARD_WS).
static void check_view(AttentionKernels kernels, DType dt, int seq, int batch, int heads, int d, float p, int causal) {
    attention_set_kernels(kernels);
    const AttentionProblem packed = {
        .seq = seq, .batch = batch, .heads = heads, .head_dim = d, .dtype = dt, .causal = causal};
    AttentionProblem view = packed;
    const int64_t T = (int64_t)seq * batch, wq = 3 * heads * d, wc = heads * d;
    view.qkv_row_stride = wq + 136, view.ctx_row_stride = wc + 64;  // as step 06's [q k v | h1], [ctx | g]
    const AttentionDropout dropout = {p, test_seed(), 11};
    float *qkv = random_floats(T * wq, -2.0f, 2.0f), *dctx = random_floats(T * wc, -1.0f, 1.0f);
    round_to_dtype(qkv, T * wq, dt);
    round_to_dtype(dctx, T * wc, dt);
    const float fill = 7.0f;  // what the extra columns hold, exact in both dtypes
    float *wide_qkv = widen(qkv, T, wq, view.qkv_row_stride, fill), *wide_dctx = widen(dctx, T, wc, view.ctx_row_stride, fill);
    float *fills_q = widen(qkv, T, 0, view.qkv_row_stride, fill), *fills_c = widen(dctx, T, 0, view.ctx_row_stride, fill);
    // The packed run.
    void *p_qkv = dev_upload(qkv, T * wq, dt), *p_dctx = dev_upload(dctx, T * wc, dt);
    void *p_ctx = dev_alloc(T * wc * 2), *p_dqkv = dev_alloc(T * wq * 2);
    float *p_lse = dev_alloc((size_t)T * heads * 4);
    void *p_ws = dev_alloc(attention_backward_workspace_bytes(&packed));
    attention_forward(&packed, &dropout, p_qkv, p_ctx, p_lse);
    attention_backward(&packed, &dropout, p_qkv, p_ctx, p_dctx, p_lse, p_dqkv, p_ws);
    // The run on views; ctx and dqkv start as `fill` everywhere.
    void *v_qkv = dev_upload(wide_qkv, T * view.qkv_row_stride, dt), *v_dctx = dev_upload(wide_dctx, T * view.ctx_row_stride, dt);
    void *v_ctx = dev_upload(fills_c, T * view.ctx_row_stride, dt), *v_dqkv = dev_upload(fills_q, T * view.qkv_row_stride, dt);
    float *v_lse = dev_alloc((size_t)T * heads * 4);
    void *v_ws = dev_alloc(attention_backward_workspace_bytes(&view));
    attention_forward(&view, &dropout, v_qkv, v_ctx, v_lse);
    attention_backward(&view, &dropout, v_qkv, v_ctx, v_dctx, v_lse, v_dqkv, v_ws);
    print_message(" %s: views, %s seq %d batch %d heads %d d %d dropout %.1f causal %d\n", SET_NAMES[kernels],
                  dtype_name(dt), seq, batch, heads, d, p, causal);
    float *want = malloc((size_t)(T * view.qkv_row_stride) * 4), *got = malloc((size_t)(T * view.qkv_row_stride) * 4);
    dev_download(want, p_ctx, T * wc, dt);
    float *want_wide = widen(want, T, wc, view.ctx_row_stride, fill);
    dev_download(got, v_ctx, T * view.ctx_row_stride, dt);
    assert_rel_error(got, want_wide, T * view.ctx_row_stride, 1e-6);
    assert_true(extra_columns_hold(got, T, wc, view.ctx_row_stride, fill));
    free(want_wide);
    dev_download(want, p_dqkv, T * wq, dt);
    want_wide = widen(want, T, wq, view.qkv_row_stride, fill);
    dev_download(got, v_dqkv, T * view.qkv_row_stride, dt);
    assert_rel_error(got, want_wide, T * view.qkv_row_stride, 1e-6);
    assert_true(extra_columns_hold(got, T, wq, view.qkv_row_stride, fill));
    free(want_wide);
    void *bufs[] = {p_qkv, p_dctx, p_ctx, p_dqkv, p_lse, p_ws, v_qkv, v_dctx, v_ctx, v_dqkv, v_lse, v_ws};
    dev_free_all(bufs, COUNT_OF(bufs));
    free(qkv), free(dctx), free(wide_qkv), free(wide_dctx), free(fills_q), free(fills_c), free(want), free(got);
}

static void test_views(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    const AttentionKernels sets[] = {ATTENTION_KERNELS_BEST, ATTENTION_KERNELS_MMA_SYNC,
                                     ATTENTION_KERNELS_MMA_SYNC_SMALL_TILES};
    for (int k = 0; k < 3; k++) {
        check_view(sets[k], DTYPE_FP16, 77, 2, 2, 64, 0.1f, 0);
        check_view(sets[k], DTYPE_BF16, 120, 1, 2, 128, 0.1f, 1);
    }
    const AttentionBackwardWS ws_was = attention_set_backward_ws(ATTENTION_BACKWARD_WS_ON);
    print_message(" warp-specialised backward:\n");
    check_view(ATTENTION_KERNELS_BEST, DTYPE_BF16, 120, 1, 2, 128, 0.1f, 1);
    check_view(ATTENTION_KERNELS_BEST, DTYPE_FP16, 77, 2, 2, 128, 0.0f, 0);
    attention_set_backward_ws(ws_was);
    attention_set_kernels(ATTENTION_KERNELS_BEST);
}

// ---- the deterministic backward --------------------------------------------------------------
// A device tensor's raw bytes, for comparing bits.
static void *download_bytes(const void *dev, size_t bytes) {
    void *host = malloc(bytes);
    CUDA_CHECK(cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost));
    return host;
}

// How many of n 16-bit values differ between a and b.
static int64_t values_differing(const uint16_t *a, const uint16_t *b, int64_t n) {
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) k += a[i] != b[i];
    return k;
}

// One backward into a fresh dqkv (NaN everywhere first: every value must be written), from a
// workspace whose every byte is `fill` first - 0xff makes each float NaN, 0x7f 3.4e38 - so that
// a deterministic backward that reads a slice nobody wrote gives NaN, inf or another answer on
// the next run. Returns dqkv's bytes.
static uint16_t *backward_bits(const AttentionProblem *p, const AttentionDropout *dropout, const void *qkv,
                               const void *ctx, const void *dctx, const float *lse, int fill) {
    const size_t dqkv_bytes = (size_t)p->seq * p->batch * p->heads * 3 * p->head_dim * 2;
    const size_t ws_bytes = attention_backward_workspace_bytes(p);
    void *dqkv = dev_alloc(dqkv_bytes), *workspace = dev_alloc(ws_bytes);
    CUDA_CHECK(cudaMemset(dqkv, 0xff, dqkv_bytes));
    CUDA_CHECK(cudaMemset(workspace, fill, ws_bytes));
    attention_backward(p, dropout, qkv, ctx, dctx, lse, dqkv, workspace);
    uint16_t *bits = download_bytes(dqkv, dqkv_bytes);
    dev_free(dqkv), dev_free(workspace);
    return bits;
}

static float *bits_to_floats(const uint16_t *bits, int64_t n, DType dt) {
    float *x = malloc((size_t)n * sizeof(float));
    if (dt == DTYPE_BF16)
        for (int64_t i = 0; i < n; i++) x[i] = bf16_to_float(bits[i]);
    else
        for (int64_t i = 0; i < n; i++) x[i] = fp16_to_float(bits[i]);
    return x;
}

// One problem through every set of kernels (the best one with ATTENTION_BACKWARD_SWAPAB off and
// on): the deterministic backward against the CPU reference at the usual tolerances, run twice from differently poisoned workspaces, dq, dk
// and dv compared bit for bit (memcmp). Then the default backward twice, for contrast: how
// many values its atomics' order changed (printed, not asserted: arrival order is up to the
// GPU). seq 520: 9 blocks of 64 keys (5 of 128) add into most dQ rows, the last block ragged
// - with two, a + b == b + a would hide any order. (Too few values to catch a varying order
// for certain: test_deterministic_backward_large is the case that would.)
static void check_deterministic(DType dt, int d, float p, int causal) {
    const int seq = 520, batch = 1, heads = 2;
    const AttentionProblem problem = {.seq = seq, .batch = batch, .heads = heads, .head_dim = d, .dtype = dt,
                                      .causal = causal, .deterministic = 1};
    AttentionProblem fast = problem;
    fast.deterministic = 0;
    const int64_t nqkv = (int64_t)seq * batch * heads * 3 * d, nctx = nqkv / 3;
    const uint64_t seed = test_seed();
    const AttentionDropout dropout = {p, seed, 9};
    float *qkv = random_floats(nqkv, -2.0f, 2.0f), *dctx = random_floats(nctx, -1.0f, 1.0f);
    round_to_dtype(qkv, nqkv, dt);
    round_to_dtype(dctx, nctx, dt);
    float *ctx = malloc(nctx * 4), *dqkv = malloc(nqkv * 4);
    float *probs = malloc((size_t)batch * heads * seq * seq * 4);
    ref_attention_forward(qkv, seq, batch, heads, d, p, causal, seed, 9, ctx, probs);
    ref_attention_backward(dctx, qkv, probs, seq, batch, heads, d, p, causal, seed, 9, dqkv);

    void *d_qkv = dev_upload(qkv, nqkv, dt), *d_dctx = dev_upload(dctx, nctx, dt), *d_ctx = dev_alloc(nctx * 2);
    float *d_lse = dev_alloc((size_t)seq * batch * heads * 4);
    // The best set twice: ATTENTION_BACKWARD_SWAPAB off, then on.
    const AttentionKernels sets[] = {ATTENTION_KERNELS_BEST, ATTENTION_KERNELS_BEST, ATTENTION_KERNELS_MMA_SYNC,
                                     ATTENTION_KERNELS_MMA_SYNC_SMALL_TILES};
    const AttentionBackwardSwapAB swapab_was = attention_set_backward_swapab(ATTENTION_SWAPAB_NEVER);
    for (int k = 0; k < 4; k++) {
        attention_set_kernels(sets[k]);
        attention_set_backward_swapab(k == 1 ? ATTENTION_SWAPAB_WHERE_SUPPORTED : ATTENTION_SWAPAB_NEVER);
        attention_forward(&problem, &dropout, d_qkv, d_ctx, d_lse);
        uint16_t *first = backward_bits(&problem, &dropout, d_qkv, d_ctx, d_dctx, d_lse, 0xff);
        uint16_t *second = backward_bits(&problem, &dropout, d_qkv, d_ctx, d_dctx, d_lse, 0x7f);
        uint16_t *fast1 = backward_bits(&fast, &dropout, d_qkv, d_ctx, d_dctx, d_lse, 0xff);
        uint16_t *fast2 = backward_bits(&fast, &dropout, d_qkv, d_ctx, d_dctx, d_lse, 0xff);
        print_message(" %s: %s, deterministic; %s seq %d d %d dropout %.1f causal %d: default path %lld of %lld "
                      "values differ between two runs\n",
                      SET_NAMES[sets[k]], attention_kernel_name(ATTENTION_BACKWARD, d), dtype_name(dt), seq, d, p,
                      causal, (long long)values_differing(fast1, fast2, nqkv), (long long)nqkv);
        float *got = bits_to_floats(first, nqkv, dt);
        assert_rel_error(got, dqkv, nqkv, tol_bwd(dt));
        assert_true(memcmp(first, second, (size_t)nqkv * 2) == 0);
        free(first), free(second), free(fast1), free(fast2), free(got);
    }
    attention_set_backward_swapab(swapab_was);
    attention_set_kernels(ATTENTION_KERNELS_BEST);
    dev_free(d_qkv), dev_free(d_dctx), dev_free(d_ctx), dev_free(d_lse);
    free(qkv), free(dctx), free(ctx), free(dqkv), free(probs);
}

// Every kernel set (above) at d 64 and 128, dropout and causal on and off, fp16 and bf16.
static void test_deterministic_backward(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    const DType dtypes[] = {DTYPE_FP16, DTYPE_BF16};
    const int dims[] = {64, 128};
    for (int t = 0; t < 2; t++)
        for (int di = 0; di < 2; di++)
            for (int drop = 0; drop < 2; drop++)
                for (int causal = 0; causal < 2; causal++)
                    check_deterministic(dtypes[t], dims[di], drop ? 0.1f : 0.0f, causal);
}

// Training-sized problems (no CPU reference: bits only), through every kernel set, both head
// dims and dtypes, causal or not: the deterministic backward must repeat itself bit for bit;
// the default one is expected to differ (printed). Why this size: the order of a sum shows in
// the float result's last bit, and survives the rounding to 16 bits only where the sum lies
// that close to a rounding boundary - about 2^-13 of the values that differ in fp16, 2^-16 in
// bf16 - so it takes millions of values (here 4.2 M per dq) for an order that varies to show
// in dq, dk, dv with near certainty. The cases above (seq 520) are too small to count on that.
// ws: the default path is the warp-specialised backward (d 128; ATTENTION_BACKWARD_WS), which
// has no deterministic variant - the deterministic runs are the other wgmma kernel's, so the
// comparison of the two paths checks the warp-specialised kernel at training size.
static void check_deterministic_large(AttentionKernels kernels, int swapab, int ws, DType dt, int d, int causal) {
    attention_set_kernels(kernels);
    const AttentionBackwardSwapAB swapab_was =
        attention_set_backward_swapab(swapab ? ATTENTION_SWAPAB_WHERE_SUPPORTED : ATTENTION_SWAPAB_NEVER);
    const AttentionBackwardWS ws_was =
        attention_set_backward_ws(ws ? ATTENTION_BACKWARD_WS_ON : ATTENTION_BACKWARD_WS_OFF);
    const int seq = 2048, batch = 2, heads = 8 * 128 / d;
    const AttentionProblem problem = {.seq = seq, .batch = batch, .heads = heads, .head_dim = d, .dtype = dt,
                                      .causal = causal, .deterministic = 1};
    AttentionProblem fast = problem;
    fast.deterministic = 0;
    const int64_t nqkv = (int64_t)seq * batch * heads * 3 * d, nctx = nqkv / 3;
    const AttentionDropout dropout = {0.1f, test_seed(), 4};
    float *qkv = random_floats(nqkv, -2.0f, 2.0f), *dctx = random_floats(nctx, -1.0f, 1.0f);
    void *d_qkv = dev_upload(qkv, nqkv, dt), *d_dctx = dev_upload(dctx, nctx, dt), *d_ctx = dev_alloc(nctx * 2);
    float *d_lse = dev_alloc((size_t)seq * batch * heads * 4);
    attention_forward(&problem, &dropout, d_qkv, d_ctx, d_lse);
    uint16_t *first = backward_bits(&problem, &dropout, d_qkv, d_ctx, d_dctx, d_lse, 0xff);
    uint16_t *second = backward_bits(&problem, &dropout, d_qkv, d_ctx, d_dctx, d_lse, 0x7f);
    uint16_t *fast1 = backward_bits(&fast, &dropout, d_qkv, d_ctx, d_dctx, d_lse, 0xff);
    uint16_t *fast2 = backward_bits(&fast, &dropout, d_qkv, d_ctx, d_dctx, d_lse, 0xff);
    const int64_t fast_differ = values_differing(fast1, fast2, nqkv);
    print_message(" %s: %s, %s seq %d batch %d heads %d d %d causal %d: deterministic %lld, default %lld of %lld "
                  "values differ between two runs%s\n",
                  SET_NAMES[kernels], attention_kernel_name(ATTENTION_BACKWARD, d), dtype_name(dt), seq, batch, heads,
                  d, causal, (long long)values_differing(first, second, nqkv), (long long)fast_differ,
                  (long long)nqkv, fast_differ ? "" : " (the default path happened to repeat itself)");
    assert_true(memcmp(first, second, (size_t)nqkv * 2) == 0);
    // Either order is as good as the other: the two paths agree to rounding.
    float *det = bits_to_floats(first, nqkv, dt), *def = bits_to_floats(fast1, nqkv, dt);
    assert_rel_error(det, def, nqkv, dt == DTYPE_BF16 ? 8e-3 : 1e-3);
    dev_free(d_qkv), dev_free(d_dctx), dev_free(d_ctx), dev_free(d_lse);
    free(qkv), free(dctx), free(first), free(second), free(fast1), free(fast2), free(det), free(def);
    attention_set_backward_swapab(swapab_was);
    attention_set_backward_ws(ws_was);
}

static void test_deterministic_backward_large(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    // The best set three times: ATTENTION_BACKWARD_SWAPAB off, then on; then (d 128 only)
    // ATTENTION_BACKWARD_WS on.
    const AttentionKernels sets[] = {ATTENTION_KERNELS_BEST, ATTENTION_KERNELS_BEST, ATTENTION_KERNELS_MMA_SYNC,
                                     ATTENTION_KERNELS_MMA_SYNC_SMALL_TILES, ATTENTION_KERNELS_BEST};
    const DType dtypes[] = {DTYPE_FP16, DTYPE_BF16};
    const int dims[] = {64, 128};
    for (int k = 0; k < 5; k++)
        for (int t = 0; t < 2; t++)
            for (int di = (k == 4 ? 1 : 0); di < 2; di++)
                for (int causal = 0; causal < 2; causal++)
                    check_deterministic_large(sets[k], k == 1, k == 4, dtypes[t], dims[di], causal);
    attention_set_kernels(ATTENTION_KERNELS_BEST);
}

// The persistent wgmma forward (ATTENTION_FORWARD_PERSISTENT, attention.h) computes each work
// tile exactly as the non-persistent one computes its block: ctx and lse must come out with the
// same bits, with a few CTAs (each looping over several work tiles, the rings and turns carried
// from one to the next; when causal, the rounds zig-zag) and with one per SM, each with the
// static and the dynamic schedule (ATTENTION_PERSISTENT_SCHEDULE), at d 64 (two and
// three consumers) and 128, fp16 and bf16, causal or not (heavy first and natural order), seq
// ragged (333), with and without dropout (at 3 consumers dropping, both runs are the
// non-persistent kernel). At d 128 all that again with 176-key tiles asked for
// (ATTENTION_FORWARD_BLOCK_N): the 176-key kernels where neither causal nor dropping, against each
// other. Without wgmma every setting runs the same kernel and agrees trivially.
static void test_persistent_forward_bit_identical(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    const int seq = 333, batch = 2, heads = 3;
    const AttentionD64Forward forward_was = attention_set_d64_forward(ATTENTION_D64_FORWARD_WG2);
    const AttentionCausalOrder order_was = attention_set_causal_order(ATTENTION_CAUSAL_HEAVY_FIRST);
    const AttentionForwardPersistent persistent_was = attention_set_forward_persistent(ATTENTION_PERSISTENT_NEVER, 0);
    const AttentionPersistentSchedule schedule_was = attention_set_persistent_schedule(ATTENTION_SCHEDULE_STATIC);
    const AttentionForwardBlockN block_n_was = attention_set_forward_block_n(ATTENTION_FORWARD_BLOCK_N_128);
    // Run 0 not persistent; 1, 2 persistent static; 3, 4 persistent dynamic.
    enum { RUNS = 5 };
    const int max_ctas[RUNS] = {0, TEST_PERSISTENT_CTAS, 0, TEST_PERSISTENT_CTAS, 0};
    for (int dti = 0; dti < 2; dti++)
        for (int d = 64; d <= 128; d += 64)
            for (int consumers = 2; consumers <= (d == 64 ? 3 : 2); consumers++)
                for (int wide = 0; wide < (d == 128 ? 2 : 1); wide++)  // 128-key tiles; 176 asked for
                    for (int causal = 0; causal < 2; causal++)
                        // Heavy first; natural; heavy first, dropping.
                        for (int variant = 0; variant < 3; variant++) {
                            const DType dt = dti ? DTYPE_BF16 : DTYPE_FP16;
                            const AttentionProblem problem = {.seq = seq, .batch = batch, .heads = heads,
                                                              .head_dim = d, .dtype = dt, .causal = causal};
                            const AttentionDropout dropout = {variant == 2 ? 0.1f : 0.0f, test_seed(), 9};
                            const int64_t nqkv = (int64_t)seq * batch * heads * 3 * d, nctx = nqkv / 3;
                            const int64_t nlse = nctx / d;
                            float *qkv = random_floats(nqkv, -2.0f, 2.0f);
                            void *d_qkv = dev_upload(qkv, nqkv, dt), *d_ctx = dev_alloc(nctx * 2);
                            float *d_lse = dev_alloc(nlse * 4);
                            attention_set_d64_forward(consumers == 3 ? ATTENTION_D64_FORWARD_WG3
                                                                     : ATTENTION_D64_FORWARD_WG2);
                            attention_set_causal_order(causal && variant == 1 ? ATTENTION_CAUSAL_NATURAL
                                                                              : ATTENTION_CAUSAL_HEAVY_FIRST);
                            attention_set_forward_block_n(wide ? ATTENTION_FORWARD_BLOCK_N_176
                                                               : ATTENTION_FORWARD_BLOCK_N_128);
                            uint16_t *ctx[RUNS];
                            float *lse[RUNS];
                            for (int run = 0; run < RUNS; run++) {
                                attention_set_forward_persistent(run > 0 ? ATTENTION_PERSISTENT_WHERE_SUPPORTED
                                                                         : ATTENTION_PERSISTENT_NEVER,
                                                                 max_ctas[run]);
                                attention_set_persistent_schedule(run >= 3 ? ATTENTION_SCHEDULE_DYNAMIC
                                                                           : ATTENTION_SCHEDULE_STATIC);
                                CUDA_CHECK(cudaMemset(d_ctx, 0xff, nctx * 2));
                                CUDA_CHECK(cudaMemset(d_lse, 0xff, nlse * 4));
                                attention_forward(&problem, &dropout, d_qkv, d_ctx, d_lse);
                                ctx[run] = download_bytes(d_ctx, nctx * 2);
                                lse[run] = download_bytes(d_lse, nlse * 4);
                            }
                            for (int run = 1; run < RUNS; run++) {
                                const int64_t ctx_differing = values_differing(ctx[0], ctx[run], nctx);
                                attention_set_persistent_schedule(run >= 3 ? ATTENTION_SCHEDULE_DYNAMIC
                                                                           : ATTENTION_SCHEDULE_STATIC);
                                print_message(" %s (%s CTAs); %s d %d causal %d dropout %.1f: %lld of %lld ctx values "
                                              "differ from the non-persistent kernel's\n",
                                              attention_kernel_name(ATTENTION_FORWARD, d),
                                              run % 2 == 1 ? "3" : "one per SM", dtype_name(dt), d, causal, dropout.p,
                                              (long long)ctx_differing, (long long)nctx);
                                assert_int_equal(ctx_differing, 0);
                                assert_memory_equal(lse[0], lse[run], nlse * 4);
                            }
                            dev_free(d_qkv), dev_free(d_ctx), dev_free(d_lse);
                            free(qkv);
                            for (int run = 0; run < RUNS; run++) free(ctx[run]), free(lse[run]);
                        }
    attention_set_d64_forward(forward_was);
    attention_set_causal_order(order_was);
    attention_set_forward_persistent(persistent_was, 0);
    attention_set_persistent_schedule(schedule_was);
    attention_set_forward_block_n(block_n_was);
}

// The 176-key forward's last tile of a row, narrower where few keys are left (64 keys for 1-64
// left, 112 for 65-112: flash_forward_wgmma.cu's LAST_N; test_forward_wide_tiles checks each
// against the reference): its scores over fewer keys and its P V over fewer k-steps must leave
// every bit as the full-width tile would. The dynamic schedule keeps full-width last tiles, so
// at seq 177 (1 key left: 64 wide) and 464 (2 x 176 + 112: 112 wide), not persistent and
// persistent static (narrow) against persistent dynamic (full width): ctx and lse bit for bit,
// fp16 and bf16. A product that read past its keys or a k-step dropped would differ here.
static void test_wide_last_tile_bits(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    const int seqs[] = {177, 464}, batch = 2, heads = 3, d = 128;
    const AttentionForwardBlockN block_n_was = attention_set_forward_block_n(ATTENTION_FORWARD_BLOCK_N_176);
    const AttentionForwardPersistent persistent_was = attention_set_forward_persistent(ATTENTION_PERSISTENT_NEVER, 0);
    const AttentionPersistentSchedule schedule_was = attention_set_persistent_schedule(ATTENTION_SCHEDULE_STATIC);
    enum { RUNS = 3 };  // not persistent; persistent static; persistent dynamic (full width)
    for (int dti = 0; dti < 2; dti++)
        for (int si = 0; si < 2; si++) {
            const int seq = seqs[si];
            const DType dt = dti ? DTYPE_BF16 : DTYPE_FP16;
            const AttentionProblem problem = {.seq = seq, .batch = batch, .heads = heads, .head_dim = d, .dtype = dt};
            const AttentionDropout dropout = {0.0f, test_seed(), 0};
            const int64_t nqkv = (int64_t)seq * batch * heads * 3 * d, nctx = nqkv / 3, nlse = nctx / d;
            float *qkv = random_floats(nqkv, -2.0f, 2.0f);
            void *d_qkv = dev_upload(qkv, nqkv, dt), *d_ctx = dev_alloc(nctx * 2);
            float *d_lse = dev_alloc(nlse * 4);
            uint16_t *ctx[RUNS];
            float *lse[RUNS];
            for (int run = 0; run < RUNS; run++) {
                attention_set_forward_persistent(run ? ATTENTION_PERSISTENT_WHERE_SUPPORTED : ATTENTION_PERSISTENT_NEVER,
                                                 run ? TEST_PERSISTENT_CTAS : 0);
                attention_set_persistent_schedule(run == 2 ? ATTENTION_SCHEDULE_DYNAMIC : ATTENTION_SCHEDULE_STATIC);
                CUDA_CHECK(cudaMemset(d_ctx, 0xff, nctx * 2));
                CUDA_CHECK(cudaMemset(d_lse, 0xff, nlse * 4));
                attention_forward(&problem, &dropout, d_qkv, d_ctx, d_lse);
                ctx[run] = download_bytes(d_ctx, nctx * 2);
                lse[run] = download_bytes(d_lse, nlse * 4);
            }
            for (int run = 0; run < 2; run++) {
                const int64_t differing = values_differing(ctx[run], ctx[2], nctx);
                print_message(" 176-key tiles, %s, seq %d: %lld of %lld ctx values differ from the full-width "
                              "last tile's\n",
                              run ? "persistent static" : "not persistent", seq, (long long)differing,
                              (long long)nctx);
                assert_int_equal(differing, 0);
                assert_memory_equal(lse[run], lse[2], nlse * 4);
            }
            dev_free(d_qkv), dev_free(d_ctx), dev_free(d_lse);
            free(qkv);
            for (int run = 0; run < RUNS; run++) free(ctx[run]), free(lse[run]);
        }
    attention_set_forward_block_n(block_n_was);
    attention_set_forward_persistent(persistent_was, 0);
    attention_set_persistent_schedule(schedule_was);
}

// Bad problems stop with a message rather than running: checked on the CPU by
// tests/attention/attention_dispatch_test.c; here only that the API's check and the
// kernels agree on the head dims.
static void test_unsupported_head_dim(void **state) {
    (void)state;
    AttentionProblem p = {.seq = 8, .batch = 1, .heads = 1, .head_dim = 96, .dtype = DTYPE_FP16};
    assert_non_null(attention_unsupported(&p));
    p.head_dim = 64;
    assert_null(attention_unsupported(&p));
    p.head_dim = 128;
    assert_null(attention_unsupported(&p));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unsupported_head_dim), cmocka_unit_test(test_plain),
        cmocka_unit_test(test_ragged_seq),           cmocka_unit_test(test_causal),
        cmocka_unit_test(test_dropout),              cmocka_unit_test(test_shard_draws_the_unsharded_mask),
        cmocka_unit_test(test_views),                cmocka_unit_test(test_backward_swapab),
        cmocka_unit_test(test_deterministic_backward),
        cmocka_unit_test(test_deterministic_backward_large), cmocka_unit_test(test_persistent_forward_bit_identical),
        cmocka_unit_test(test_forward_wide_tiles),   cmocka_unit_test(test_wide_last_tile_bits),
        cmocka_unit_test(test_backward_ws_swapab80), cmocka_unit_test(test_backward_ws_causal),
    };
    // FLASH_TEST_ONLY=<pattern>: only the tests whose names match (cmocka's filter, * a wildcard),
    // for a quick run of one kernel's test on a GPU - a full run takes minutes.
    // A pattern that matches no test stops with a message (else cmocka runs 0 tests and says PASSED).
    const char *only = getenv("FLASH_TEST_ONLY");
    if (only && *only) {
        int matches = 0;
        for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) matches += fnmatch(only, tests[i].name, 0) == 0;
        if (!matches) {
            fprintf(stderr, "FLASH_TEST_ONLY='%s' matches none of this program's %zu tests (names: test_plain, "
                            "test_causal, ...; * matches any run of characters)\n",
                    only, sizeof tests / sizeof tests[0]);
            return 1;
        }
        cmocka_set_test_filter(only);
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
