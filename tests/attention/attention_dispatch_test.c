// Which attention kernel runs where (attention_choose_kernel), and which problems the API
// accepts (attention_unsupported): pure functions of their arguments, checked on the CPU for
// every GPU generation the workshops meet. Shared-memory limits come from
// common/core/gpu_arch.h, as on a real GPU of that compute capability.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/core/gpu_arch.h"
#include "common/core/philox.h"
#include "kernels/attention/attention.h"
#include "kernels/attention/attention_fp8.h"
#include "kernels/attention/block_order.h"
#include "tests/test_util.h"

static AttentionDevice gpu(int cc, int wgmma_image_loaded) {
    return (AttentionDevice){cc, wgmma_image_loaded, gpu_arch_max_smem_per_block(cc)};
}

// The choice for one pass; fails the test if there is none.
static AttentionKernelChoice choose(AttentionDevice dev, AttentionKernels set, AttentionPass pass, int d) {
    AttentionKernelChoice k;
    char why[320];
    const char *err = attention_choose_kernel(&dev, set, pass, d, &k, why, sizeof why);
    if (err) fail_msg("cc %d image %d d %d: %s", dev.cc, dev.wgmma_image_loaded, d, err);
    print_message("  cc %d, sm_90a image %d, limit %6zu, set %d, d %3d: %-40s %6zu bytes\n", dev.cc,
                  dev.wgmma_image_loaded, dev.max_smem_per_block, set, d, k.kernel, k.smem_bytes);
    return k;
}

// An H100 / H200 with the default build: Hopper's kernels, both passes, both head dims.
static void test_hopper_with_sm90a_image(void **state) {
    (void)state;
    const AttentionDevice h100 = gpu(90, 1);
    for (int d = 64; d <= 128; d += 64) {
        AttentionKernelChoice f = choose(h100, ATTENTION_KERNELS_BEST, ATTENTION_FORWARD, d);
        AttentionKernelChoice b = choose(h100, ATTENTION_KERNELS_BEST, ATTENTION_BACKWARD, d);
        assert_int_equal(f.wgmma, 1);
        assert_int_equal(b.wgmma, 1);
        assert_string_equal(f.kernel, "wgmma forward");
        assert_string_equal(b.kernel, "wgmma backward");
        assert_true(b.smem_bytes <= h100.max_smem_per_block);
    }
}

// The same GPU running a build without sm_90a code (PTX for compute_80, JIT-compiled): the
// wgmma kernels' bodies are not there, so the mma.sync ones run, with an A100's tiles.
static void test_hopper_without_sm90a_image(void **state) {
    (void)state;
    const AttentionDevice h100 = gpu(90, 0);
    for (int d = 64; d <= 128; d += 64) {
        AttentionKernelChoice f = choose(h100, ATTENTION_KERNELS_BEST, ATTENTION_FORWARD, d);
        AttentionKernelChoice b = choose(h100, ATTENTION_KERNELS_BEST, ATTENTION_BACKWARD, d);
        assert_int_equal(f.wgmma, 0);
        assert_int_equal(b.wgmma, 0);
        assert_int_equal(f.tile, 2);
        assert_int_equal(b.tile, d == 128 ? 128 : 64);
    }
}

// An A100 (163 KiB per block): mma.sync with the largest tiles. Never wgmma, even if a probe
// said the image held it: the compute capability decides first.
static void test_a100(void **state) {
    (void)state;
    for (int image = 0; image <= 1; image++) {
        const AttentionDevice a100 = gpu(80, image);
        for (int d = 64; d <= 128; d += 64) {
            AttentionKernelChoice f = choose(a100, ATTENTION_KERNELS_BEST, ATTENTION_FORWARD, d);
            AttentionKernelChoice b = choose(a100, ATTENTION_KERNELS_BEST, ATTENTION_BACKWARD, d);
            assert_int_equal(f.wgmma, 0);
            assert_int_equal(b.wgmma, 0);
            assert_int_equal(f.tile, 2);
            assert_int_equal(b.tile, d == 128 ? 128 : 64);
        }
    }
}

// sm_86 / sm_89 (RTX 30xx / 40xx, L4, L40S: 99 KiB per block): at d = 128 the forward keeps one
// K/V stage and the backward takes 64 keys per block; at d = 64 the large tiles fit.
static void test_99_kib_gpus(void **state) {
    (void)state;
    const int ccs[] = {86, 89};
    for (int i = 0; i < 2; i++) {
        const AttentionDevice g = gpu(ccs[i], 0);
        assert_int_equal(g.max_smem_per_block, 99 * 1024);
        AttentionKernelChoice f128 = choose(g, ATTENTION_KERNELS_BEST, ATTENTION_FORWARD, 128);
        AttentionKernelChoice b128 = choose(g, ATTENTION_KERNELS_BEST, ATTENTION_BACKWARD, 128);
        AttentionKernelChoice f64 = choose(g, ATTENTION_KERNELS_BEST, ATTENTION_FORWARD, 64);
        AttentionKernelChoice b64 = choose(g, ATTENTION_KERNELS_BEST, ATTENTION_BACKWARD, 64);
        assert_int_equal(f128.tile, 1);
        assert_int_equal(b128.tile, 64);
        assert_int_equal(f64.tile, 2);
        assert_int_equal(b64.tile, 64);
        const AttentionKernelChoice all[] = {f128, b128, f64, b64};
        for (int k = 0; k < 4; k++) {
            assert_int_equal(all[k].wgmma, 0);
            assert_true(all[k].smem_bytes <= 99 * 1024);
        }
    }
}

// The sets the tests and the benchmark force: mma.sync with the largest tiles, and with the
// tiles of a 99 KiB GPU, on an H100 whose image holds the wgmma kernels.
static void test_forced_sets(void **state) {
    (void)state;
    const AttentionDevice h100 = gpu(90, 1);
    AttentionKernelChoice f = choose(h100, ATTENTION_KERNELS_MMA_SYNC, ATTENTION_FORWARD, 128);
    AttentionKernelChoice b = choose(h100, ATTENTION_KERNELS_MMA_SYNC, ATTENTION_BACKWARD, 128);
    assert_int_equal(f.wgmma, 0), assert_int_equal(f.tile, 2);
    assert_int_equal(b.wgmma, 0), assert_int_equal(b.tile, 128);
    f = choose(h100, ATTENTION_KERNELS_MMA_SYNC_SMALL_TILES, ATTENTION_FORWARD, 128);
    b = choose(h100, ATTENTION_KERNELS_MMA_SYNC_SMALL_TILES, ATTENTION_BACKWARD, 128);
    assert_int_equal(f.wgmma, 0), assert_int_equal(f.tile, 1);
    assert_int_equal(b.wgmma, 0), assert_int_equal(b.tile, 64);
    // What the best set's backward at d = 64 becomes with ATTENTION_D64_BACKWARD=mma.
    b = choose(h100, ATTENTION_KERNELS_MMA_SYNC, ATTENTION_BACKWARD, 64);
    assert_int_equal(b.wgmma, 0), assert_int_equal(b.tile, 64);
    assert_string_equal(b.kernel, "mma.sync backward (64 keys per block)");
}

// Every combination: a chosen kernel fits the limit, and wgmma only where it can run.
static void test_every_choice_fits(void **state) {
    (void)state;
    const int ccs[] = {80, 86, 87, 89, 90, 120};
    const AttentionKernels sets[] = {ATTENTION_KERNELS_BEST, ATTENTION_KERNELS_MMA_SYNC,
                                     ATTENTION_KERNELS_MMA_SYNC_SMALL_TILES};
    for (int c = 0; c < 6; c++)
        for (int image = 0; image <= 1; image++)
            for (int s = 0; s < 3; s++)
                for (int pass = 0; pass <= 1; pass++)
                    for (int d = 64; d <= 128; d += 64) {
                        const AttentionDevice dev = gpu(ccs[c], image);
                        AttentionKernelChoice k;
                        char why[320];
                        assert_null(attention_choose_kernel(&dev, sets[s], (AttentionPass)pass, d, &k, why, sizeof why));
                        assert_true(k.smem_bytes <= dev.max_smem_per_block);
                        if (k.wgmma) {
                            assert_int_equal(dev.cc, 90);
                            assert_int_equal(image, 1);
                            assert_int_equal(sets[s], ATTENTION_KERNELS_BEST);
                        }
                    }
}

// Nothing fits, a GPU below 8.0, a head dim the kernels lack: a sentence that names the
// kernel, the bytes it needs and the limit (or what is missing).
static void test_refusals(void **state) {
    (void)state;
    AttentionKernelChoice k;
    char why[320];
    const AttentionDevice small = {80, 0, 48 * 1024};
    const char *err = attention_choose_kernel(&small, ATTENTION_KERNELS_BEST, ATTENTION_FORWARD, 128, &k, why, sizeof why);
    assert_non_null(err);
    print_message("  %s\n", err);
    assert_non_null(strstr(err, "mma.sync forward (1 K/V stage)"));
    assert_non_null(strstr(err, "needs 69632 bytes"));  // (128 + 2 * 64) rows of 136 16-bit values
    assert_non_null(strstr(err, "49152"));
    err = attention_choose_kernel(&small, ATTENTION_KERNELS_BEST, ATTENTION_BACKWARD, 128, &k, why, sizeof why);
    assert_non_null(err);
    print_message("  %s\n", err);
    assert_non_null(strstr(err, "mma.sync backward (64 keys per block)"));

    const AttentionDevice t4 = gpu(75, 0);
    err = attention_choose_kernel(&t4, ATTENTION_KERNELS_BEST, ATTENTION_FORWARD, 64, &k, why, sizeof why);
    assert_non_null(err);
    print_message("  %s\n", err);
    assert_non_null(strstr(err, "8.0"));
    assert_non_null(strstr(err, "7.5"));

    const AttentionDevice h100 = gpu(90, 1);
    assert_non_null(attention_choose_kernel(&h100, ATTENTION_KERNELS_BEST, ATTENTION_FORWARD, 96, &k, why, sizeof why));
}

static void test_unsupported_problems(void **state) {
    (void)state;
    const AttentionProblem ok = {.seq = 77, .batch = 2, .heads = 4, .head_dim = 64, .dtype = DTYPE_BF16};
    assert_null(attention_unsupported(&ok));
    AttentionProblem p = ok;
    p.head_dim = 96;
    assert_non_null(attention_unsupported(&p));
    p = ok, p.head_dim = 128;
    assert_null(attention_unsupported(&p));
    p = ok, p.seq = 0;
    assert_non_null(attention_unsupported(&p));
    // Views: at least the packed width, in 16-byte steps.
    p = ok, p.qkv_row_stride = 3 * 4 * 64 + 8, p.ctx_row_stride = 4 * 64 + 64;
    assert_null(attention_unsupported(&p));
    p = ok, p.qkv_row_stride = 3 * 4 * 64 - 8;
    assert_non_null(attention_unsupported(&p));
    p = ok, p.qkv_row_stride = 3 * 4 * 64 + 4;
    assert_non_null(attention_unsupported(&p));
    p = ok, p.ctx_row_stride = 4 * 64 - 8;
    assert_non_null(attention_unsupported(&p));
    // A shard's heads lie within the layer's.
    p = ok, p.total_heads = 8, p.first_head = 4;
    assert_null(attention_unsupported(&p));
    p = ok, p.total_heads = 8, p.first_head = 5;
    assert_non_null(attention_unsupported(&p));
    p = ok, p.total_heads = 8, p.first_head = -1;
    assert_non_null(attention_unsupported(&p));
    p = ok, p.total_heads = 2;
    assert_non_null(attention_unsupported(&p));
    // deterministic is a switch.
    p = ok, p.deterministic = 1;
    assert_null(attention_unsupported(&p));
    p = ok, p.deterministic = 2;
    assert_non_null(attention_unsupported(&p));
}

// The workspace: Dsum (rounded up to 64 floats), the swapAB backward's tile statistics (2 floats
// per query, each head's row padded to 128 queries: seq 300 -> 384, 320 -> 384) and dQ's float
// accumulator; deterministic, one accumulator per 64 keys (seq 300: 5), whichever kernel runs -
// the default's size unchanged by the switch.
static void test_backward_workspace(void **state) {
    (void)state;
    AttentionProblem p = {.seq = 300, .batch = 3, .heads = 8, .head_dim = 128, .dtype = DTYPE_FP16};
    const size_t dsum = (300 * 3 * 8 + 63) / 64 * 64, stats = 2 * (size_t)384 * 3 * 8;
    const size_t accumulator = (size_t)300 * 3 * 8 * 128;
    assert_int_equal(attention_backward_workspace_bytes(&p), (dsum + stats + accumulator) * 4);
    p.deterministic = 1;
    assert_int_equal(attention_backward_workspace_bytes(&p), (dsum + stats + 5 * accumulator) * 4);
    p.seq = 320;  // 5 blocks of 64 exactly
    assert_int_equal(attention_backward_workspace_bytes(&p),
                     ((320 * 3 * 8 + 63) / 64 * 64 + stats + 5 * (size_t)320 * 3 * 8 * 128) * 4);
    p.causal = 1, p.head_dim = 64;  // causal: the same (block kb writes rows 64 kb on of a whole slice)
    assert_int_equal(attention_backward_workspace_bytes(&p),
                     ((320 * 3 * 8 + 63) / 64 * 64 + stats + 5 * (size_t)320 * 3 * 8 * 64) * 4);
    // The statistics' rows: seq rounded up to a multiple of 128 or of 80 (the 80-query backward's
    // tiles), whichever is longer. 256, a multiple of 128 only: 320; 640, of both: no padding.
    p.seq = 256, p.deterministic = 0;
    assert_int_equal(attention_backward_workspace_bytes(&p),
                     ((256 * 3 * 8 + 63) / 64 * 64 + 2 * (size_t)320 * 3 * 8 + (size_t)256 * 3 * 8 * 64) * 4);
    p.seq = 640;
    assert_int_equal(attention_backward_workspace_bytes(&p),
                     ((640 * 3 * 8 + 63) / 64 * 64 + 2 * (size_t)640 * 3 * 8 + (size_t)640 * 3 * 8 * 64) * 4);
}

static void test_layer_problem(void **state) {
    (void)state;
    const LayerConfig c = {.hidden = 1024, .ffn = 4096, .heads = 8, .seq = 300, .batch = 3, .dtype = DTYPE_FP16,
                           .causal = 1, .attn_dropout = 0.1f, .seed = 42};
    const AttentionProblem p = attention_layer_problem(&c);
    assert_int_equal(p.head_dim, 128);
    assert_int_equal(p.heads, 8), assert_int_equal(p.seq, 300), assert_int_equal(p.batch, 3);
    assert_int_equal(p.causal, 1);
    assert_int_equal(p.deterministic, 0);
    assert_int_equal(p.qkv_row_stride, 0), assert_int_equal(p.total_heads, 0);
    LayerConfig deterministic = c;
    deterministic.deterministic = 1;
    assert_int_equal(attention_layer_problem(&deterministic).deterministic, 1);
    const AttentionDropout d = attention_layer_dropout(&c, 7);
    assert_true(d.p == 0.1f);
    assert_int_equal(d.seed, 42);
    assert_int_equal(d.offset, dropout_offset(7, DROPOUT_SITE_ATTENTION));
}

// The wgmma forward's block orders (block_order.h): every (query block, head) exactly once;
// natural is ascending, head after head; heavy first never starts a lighter query block of a
// group before a heavier one, and its groups come in order of their heads. Ragged last groups
// (bh not a multiple of the group) included.
static void check_block_order(int query_blocks, int bh_count, int group_heads) {
    const int n = query_blocks * bh_count;
    char *seen = calloc((size_t)n, 1);
    int previous_qb = query_blocks, previous_group = 0;
    for (int linear = 0; linear < n; linear++) {
        const FlashBlock blk = flash_block_at(linear, query_blocks, bh_count, group_heads);
        assert_in_range(blk.query_block, 0, query_blocks - 1);
        assert_in_range(blk.bh, 0, bh_count - 1);
        const int index = blk.bh * query_blocks + blk.query_block;
        assert_int_equal(seen[index], 0);
        seen[index] = 1;
        if (group_heads == 0) {
            assert_int_equal(index, linear);
            continue;
        }
        const int group = blk.bh / group_heads;
        assert_true(group >= previous_group);
        if (group > previous_group) previous_qb = query_blocks, previous_group = group;
        assert_true(blk.query_block <= previous_qb);
        previous_qb = blk.query_block;
    }
    free(seen);
}

static void test_block_order(void **state) {
    (void)state;
    const int shapes[][2] = {{1, 1}, {16, 128}, {11, 7}, {3, 5}, {1, 9}};
    const int groups[] = {0, 1, 2, 3, 4, 32, 200};
    for (int s = 0; s < 5; s++)
        for (int g = 0; g < 7; g++) check_block_order(shapes[s][0], shapes[s][1], groups[g]);
    // Heavy first, G = 1: each head's blocks in descending order.
    assert_int_equal(flash_block_at(0, 4, 3, 1).query_block, 3);
    assert_int_equal(flash_block_at(5, 4, 3, 1).query_block, 2);
    assert_int_equal(flash_block_at(5, 4, 3, 1).bh, 1);
    // G = 2 of 3 heads: the heaviest blocks of heads 0 and 1, then their next; head 2 alone last.
    assert_int_equal(flash_block_at(1, 4, 3, 2).bh, 1);
    assert_int_equal(flash_block_at(1, 4, 3, 2).query_block, 3);
    assert_int_equal(flash_block_at(2, 4, 3, 2).bh, 0);
    assert_int_equal(flash_block_at(2, 4, 3, 2).query_block, 2);
    assert_int_equal(flash_block_at(8, 4, 3, 2).bh, 2);
    assert_int_equal(flash_block_at(8, 4, 3, 2).query_block, 3);
    // The group: two [seq x d] 16-bit tensors a head in 32 MiB - 1 MiB a head at s 2048, d 128
    // (32 heads), half that at d 64 (64); never more than the heads there are, never fewer
    // than one.
    assert_int_equal(flash_heavy_first_group_heads(2048, 128, 128), 32);
    assert_int_equal(flash_heavy_first_group_heads(2048, 64, 128), 64);
    assert_int_equal(flash_heavy_first_group_heads(2048, 128, 6), 6);
    assert_int_equal(flash_heavy_first_group_heads(1 << 20, 128, 128), 1);
}

// The backward's key-block order (block_order.h's flash_key_block_at): every (key block, head)
// exactly once; natural (G = 0) as a (key_blocks, bh) grid; heavy first (G >= 1) the forward's
// order mirrored, so a group starts with its heads' key block 0 (causal: the heaviest) and
// each head's key blocks come in ascending order.
static void test_key_block_order(void **state) {
    (void)state;
    const int shapes[][2] = {{1, 1}, {16, 128}, {11, 7}, {3, 5}};
    const int groups[] = {0, 1, 2, 3, 32, 200};
    for (int s = 0; s < 4; s++)
        for (int g = 0; g < 6; g++) {
            const int key_blocks = shapes[s][0], bh_count = shapes[s][1], total = key_blocks * bh_count;
            int *seen = calloc((size_t)total, sizeof(int)), *last_kb = malloc((size_t)bh_count * sizeof(int));
            assert_non_null(seen), assert_non_null(last_kb);
            for (int bh = 0; bh < bh_count; bh++) last_kb[bh] = -1;
            for (int linear = 0; linear < total; linear++) {
                const FlashBlock blk = flash_key_block_at(linear, key_blocks, bh_count, groups[g]);
                assert_in_range(blk.query_block, 0, key_blocks - 1);
                assert_in_range(blk.bh, 0, bh_count - 1);
                seen[blk.bh * key_blocks + blk.query_block]++;
                assert_true(blk.query_block > last_kb[blk.bh]);  // a head's key blocks ascending
                last_kb[blk.bh] = blk.query_block;
                if (groups[g] == 0) assert_int_equal(blk.query_block, linear % key_blocks);
            }
            for (int i = 0; i < total; i++) assert_int_equal(seen[i], 1);
            free(seen), free(last_kb);
        }
    // G = 2 of 3 heads, 4 key blocks: key block 0 of heads 0 and 1, then their key block 1, ...;
    // head 2 alone last, from its key block 0.
    assert_int_equal(flash_key_block_at(0, 4, 3, 2).query_block, 0);
    assert_int_equal(flash_key_block_at(1, 4, 3, 2).bh, 1);
    assert_int_equal(flash_key_block_at(1, 4, 3, 2).query_block, 0);
    assert_int_equal(flash_key_block_at(2, 4, 3, 2).query_block, 1);
    assert_int_equal(flash_key_block_at(8, 4, 3, 2).bh, 2);
    assert_int_equal(flash_key_block_at(8, 4, 3, 2).query_block, 0);
}

// A backward launch's key-block order (flash_backward_key_order, both wgmma backwards): seq /
// 128 blocks rounded up; heavy first over groups only when causal and asked for (seq 2048, d
// 128: two 512 KiB tensors per head, 32 heads per 32 MiB); natural otherwise.
static void test_backward_key_order(void **state) {
    (void)state;
    KeyBlockOrder o = flash_backward_key_order(1000, 64, 8, 128, 0, 1);
    assert_int_equal(o.key_blocks, 8), assert_int_equal(o.group_heads, 0);
    o = flash_backward_key_order(1000, 64, 8, 128, 1, 0);
    assert_int_equal(o.key_blocks, 8), assert_int_equal(o.group_heads, 0);
    o = flash_backward_key_order(1000, 64, 8, 128, 1, 1);
    assert_int_equal(o.group_heads, 8);  // all 8 heads fit
    o = flash_backward_key_order(2048, 128, 128, 128, 1, 1);
    assert_int_equal(o.key_blocks, 16), assert_int_equal(o.group_heads, 32);
    assert_int_equal(flash_backward_key_order(128, 128, 2, 128, 1, 1).key_blocks, 1);
    assert_int_equal(flash_backward_key_order(129, 128, 2, 128, 1, 1).key_blocks, 2);
}

// ATTENTION_BACKWARD_SWAPAB's setter returns the value before it (the variable is unset in the
// test's environment: the policy at first), and leaves it as it was.
static void test_backward_swapab_setter(void **state) {
    (void)state;
    const char *env = getenv("ATTENTION_BACKWARD_SWAPAB");
    const AttentionBackwardSwapAB first = attention_set_backward_swapab(ATTENTION_SWAPAB_WHERE_SUPPORTED);
    if (!env || !*env) assert_int_equal(first, ATTENTION_SWAPAB_POLICY);
    assert_int_equal(attention_set_backward_swapab(ATTENTION_SWAPAB_NEVER), ATTENTION_SWAPAB_WHERE_SUPPORTED);
    assert_int_equal(attention_set_backward_swapab(first), ATTENTION_SWAPAB_NEVER);
}

// ATTENTION_BACKWARD_WS's setter likewise (on at first when the variable is unset).
static void test_backward_ws_setter(void **state) {
    (void)state;
    const char *env = getenv("ATTENTION_BACKWARD_WS");
    const AttentionBackwardWS first = attention_set_backward_ws(ATTENTION_BACKWARD_WS_ON);
    if (!env || !*env) assert_int_equal(first, ATTENTION_BACKWARD_WS_ON);
    assert_int_equal(attention_set_backward_ws(ATTENTION_BACKWARD_WS_OFF), ATTENTION_BACKWARD_WS_ON);
    assert_int_equal(attention_set_backward_ws(ATTENTION_BACKWARD_WS_64), ATTENTION_BACKWARD_WS_OFF);
    assert_int_equal(attention_set_backward_ws(ATTENTION_BACKWARD_WS_80), ATTENTION_BACKWARD_WS_64);
    assert_int_equal(attention_set_backward_ws(first), ATTENTION_BACKWARD_WS_80);
}

// ATTENTION_BACKWARD_CAUSAL_TILE's setter likewise (80 at first when the variable is unset).
static void test_backward_causal_tile_setter(void **state) {
    (void)state;
    const char *env = getenv("ATTENTION_BACKWARD_CAUSAL_TILE");
    const AttentionBackwardCausalTile first = attention_set_backward_causal_tile(ATTENTION_BACKWARD_CAUSAL_TILE_80);
    if (!env || !*env) assert_int_equal(first, ATTENTION_BACKWARD_CAUSAL_TILE_80);
    assert_int_equal(attention_set_backward_causal_tile(ATTENTION_BACKWARD_CAUSAL_TILE_64),
                     ATTENTION_BACKWARD_CAUSAL_TILE_80);
    assert_int_equal(attention_set_backward_causal_tile(first), ATTENTION_BACKWARD_CAUSAL_TILE_64);
}

// ATTENTION_BACKWARD_PERSISTENT's setter likewise (on at first when the variable is unset).
static void test_backward_persistent_setter(void **state) {
    (void)state;
    const char *env = getenv("ATTENTION_BACKWARD_PERSISTENT");
    const AttentionBackwardPersistent first = attention_set_backward_persistent(ATTENTION_BACKWARD_PERSISTENT_ON, 3);
    if (!env || !*env) assert_int_equal(first, ATTENTION_BACKWARD_PERSISTENT_ON);
    assert_int_equal(attention_set_backward_persistent(ATTENTION_BACKWARD_PERSISTENT_OFF, 0),
                     ATTENTION_BACKWARD_PERSISTENT_ON);
    assert_int_equal(attention_set_backward_persistent(first, 0), ATTENTION_BACKWARD_PERSISTENT_OFF);
}

// ATTENTION_FORWARD_BLOCK_N's setter likewise (176 at first when the variable is unset).
static void test_forward_block_n_setter(void **state) {
    (void)state;
    const char *env = getenv("ATTENTION_FORWARD_BLOCK_N");
    const AttentionForwardBlockN first = attention_set_forward_block_n(ATTENTION_FORWARD_BLOCK_N_128);
    if (!env || !*env) assert_int_equal(first, ATTENTION_FORWARD_BLOCK_N_176);
    assert_int_equal(attention_set_forward_block_n(ATTENTION_FORWARD_BLOCK_N_176), ATTENTION_FORWARD_BLOCK_N_128);
    assert_int_equal(attention_set_forward_block_n(first), ATTENTION_FORWARD_BLOCK_N_176);
}

// The persistent forward's schedule (block_order.h): straight and zig-zag, every work tile
// taken by exactly one CTA, at least one per CTA, each CTA's tiles in ascending rounds; with
// one round only, a partial last round (reversed or not, depending on its parity), and one
// CTA.
static void check_persistent_schedule(int work_tiles, int ctas, int zigzag) {
    char *seen = calloc((size_t)work_tiles, 1);
    for (int cta = 0; cta < ctas; cta++) {
        const int count = persistent_tile_count(cta, ctas, work_tiles, zigzag);
        assert_true(count >= 1);
        for (int j = 0; j < count; j++) {
            const int work = persistent_work_tile(j, cta, ctas, zigzag);
            assert_in_range(work, 0, work_tiles - 1);
            assert_int_equal(work / ctas, j);  // round j
            assert_int_equal(seen[work], 0);
            seen[work] = 1;
        }
    }
    for (int work = 0; work < work_tiles; work++) assert_int_equal(seen[work], 1);
    free(seen);
}

static void test_persistent_schedule(void **state) {
    (void)state;
    const int cases[][2] = {{1, 1}, {7, 7}, {8, 3}, {9, 3}, {10, 3}, {11, 3}, {13, 4}, {17, 4},
                            {100, 1}, {2048, 132}, {2100, 132}, {2200, 132}, {513, 132}, {133, 132}};
    for (int c = 0; c < (int)(sizeof cases / sizeof cases[0]); c++)
        for (int zigzag = 0; zigzag < 2; zigzag++) check_persistent_schedule(cases[c][0], cases[c][1], zigzag);
    // 10 tiles, 4 CTAs, zig-zag: rounds {0 1 2 3}, {7 6 5 4} reversed, {8 9} (even: straight).
    assert_int_equal(persistent_work_tile(1, 0, 4, 1), 7);
    assert_int_equal(persistent_work_tile(1, 3, 4, 1), 4);
    assert_int_equal(persistent_work_tile(2, 1, 4, 1), 9);
    assert_int_equal(persistent_tile_count(1, 4, 10, 1), 3);
    assert_int_equal(persistent_tile_count(2, 4, 10, 1), 2);
    // 6 tiles, 4 CTAs, zig-zag: the partial round 1 is reversed, so CTAs 3 and 2 take 4 and 5.
    assert_int_equal(persistent_tile_count(0, 4, 6, 1), 1);
    assert_int_equal(persistent_tile_count(3, 4, 6, 1), 2);
    assert_int_equal(persistent_work_tile(1, 3, 4, 1), 4);
    assert_int_equal(persistent_work_tile(1, 2, 4, 1), 5);
    // Straight: CTA i takes i, i + ctas, ...
    assert_int_equal(persistent_work_tile(1, 0, 4, 0), 4);
    assert_int_equal(persistent_tile_count(0, 4, 6, 0), 2);
    assert_int_equal(persistent_tile_count(3, 4, 6, 0), 1);
}

// ---- the switches (attention.h's and attention_fp8.h's ATTENTION_* environment variables) ---
// Each switch is read once, by the first call that needs it - here its setter, which returns
// the value in force before it - so this test runs before any other has read one. Runs in a
// child: sets `name` to `value`, calls `read_switch` and exits with the value the switch had
// (or with fail_user's 1, its message on stderr, which comes back in `message`). Returns the
// child's exit status.
static int switch_in_child(const char *name, const char *value, int (*read_switch)(void), char *message, size_t size) {
    int pipe_fds[2];
    assert_int_equal(pipe(pipe_fds), 0);
    fflush(stdout), fflush(stderr);
    const pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(pipe_fds[1], 2);
        close(pipe_fds[0]);
        setenv(name, value, 1);
        _exit(10 + read_switch());
    }
    close(pipe_fds[1]);
    size_t length = 0;  // read to the end: fail_user writes its message in several pieces
    for (ssize_t got; length < size - 1 && (got = read(pipe_fds[0], message + length, size - 1 - length)) > 0;)
        length += (size_t)got;
    message[length] = 0;
    close(pipe_fds[0]);
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int read_causal_order(void) { return (int)attention_set_causal_order(ATTENTION_CAUSAL_HEAVY_FIRST); }
static int read_d64_forward(void) { return (int)attention_set_d64_forward(ATTENTION_D64_FORWARD_WG3); }
static int read_persistent(void) { return (int)attention_set_forward_persistent(ATTENTION_PERSISTENT_POLICY, 0); }
static int read_schedule(void) { return (int)attention_set_persistent_schedule(ATTENTION_SCHEDULE_POLICY); }
static int read_swapab(void) { return (int)attention_set_backward_swapab(ATTENTION_SWAPAB_POLICY); }
static int read_ws(void) { return (int)attention_set_backward_ws(ATTENTION_BACKWARD_WS_OFF); }
static int read_causal_tile(void) {
    return (int)attention_set_backward_causal_tile(ATTENTION_BACKWARD_CAUSAL_TILE_80);
}
static int read_backward_persistent(void) {
    return (int)attention_set_backward_persistent(ATTENTION_BACKWARD_PERSISTENT_OFF, 0);
}
static int read_block_n(void) { return (int)attention_set_forward_block_n(ATTENTION_FORWARD_BLOCK_N_128); }
// The setter given a value outside its enum (160: a tile width the kernel does not have).
static int set_block_n_160(void) { return (int)attention_set_forward_block_n((AttentionForwardBlockN)160); }
// The FP8 forward's switches (attention_fp8.h): keys per tile (128 or 192) and persistent CTAs
// (0 or 1), each read by its setter; and the tile setter given a width the kernel does not have.
static int read_fp8_block_n(void) { return attention_fp8_set_block_n(128); }
static int read_fp8_persistent(void) { return attention_fp8_set_persistent(0); }
static int set_fp8_block_n_160(void) { return attention_fp8_set_block_n(160); }
// Whether 192- and 128-key tiles fit the K/V ring depth ATTENTION_FP8_STAGES sets.
static int fp8_192_fits(void) { return attention_fp8_block_n_fits(192); }
static int fp8_128_fits(void) { return attention_fp8_block_n_fits(128); }
// attention_fp8_settings_unsupported with the tile width unset (the default, 192) or set to 128:
// 0 if the settings fit together, 1 if it refuses the ring depth, 2 if it says anything else.
static int fp8_settings_refusal(void) {
    const char *why = attention_fp8_settings_unsupported();
    return !why ? 0 : strstr(why, "ATTENTION_FP8_STAGES=4 needs 128-key tiles (ATTENTION_FP8_BLOCK_N=128)") ? 1 : 2;
}
static int fp8_settings_refusal_default_tiles(void) {
    unsetenv("ATTENTION_FP8_BLOCK_N");  // the default whatever this test's environment says
    return fp8_settings_refusal();
}
static int fp8_settings_refusal_128_tiles(void) {
    attention_fp8_set_block_n(128);
    return fp8_settings_refusal();
}

// Every spelling gives its value (the child's exit status is 10 + the value); an empty
// variable is as unset; anything else stops with a message naming the variable, every
// spelling it takes and what it got.
static void test_switches(void **state) {
    (void)state;
    const struct {
        const char *name;
        int (*read_switch)(void);
        const char *spellings[4];
        int values[4];
        int unset;
        const char *refusal;
    } switches[] = {
        {"ATTENTION_CAUSAL_ORDER", read_causal_order, {"heavy-first", "natural", "heavy-first-per-head"},
         {ATTENTION_CAUSAL_HEAVY_FIRST, ATTENTION_CAUSAL_NATURAL, ATTENTION_CAUSAL_HEAVY_FIRST_PER_HEAD},
         ATTENTION_CAUSAL_HEAVY_FIRST,
         "ATTENTION_CAUSAL_ORDER must be heavy-first, natural or heavy-first-per-head (or unset), not \"zigzag\""},
        {"ATTENTION_D64_FORWARD", read_d64_forward, {"wg2", "wg3"},
         {ATTENTION_D64_FORWARD_WG2, ATTENTION_D64_FORWARD_WG3}, ATTENTION_D64_FORWARD_WG3,
         "ATTENTION_D64_FORWARD must be wg2 or wg3 (or unset), not \"zigzag\""},
        {"ATTENTION_FORWARD_PERSISTENT", read_persistent, {"1", "0"},
         {ATTENTION_PERSISTENT_WHERE_SUPPORTED, ATTENTION_PERSISTENT_NEVER}, ATTENTION_PERSISTENT_POLICY,
         "ATTENTION_FORWARD_PERSISTENT must be 1 or 0 (or unset), not \"zigzag\""},
        {"ATTENTION_PERSISTENT_SCHEDULE", read_schedule, {"static", "dynamic"},
         {ATTENTION_SCHEDULE_STATIC, ATTENTION_SCHEDULE_DYNAMIC}, ATTENTION_SCHEDULE_POLICY,
         "ATTENTION_PERSISTENT_SCHEDULE must be static or dynamic (or unset), not \"zigzag\""},
        {"ATTENTION_BACKWARD_SWAPAB", read_swapab, {"1", "0"},
         {ATTENTION_SWAPAB_WHERE_SUPPORTED, ATTENTION_SWAPAB_NEVER}, ATTENTION_SWAPAB_POLICY,
         "ATTENTION_BACKWARD_SWAPAB must be 1 or 0 (or unset), not \"zigzag\""},
        {"ATTENTION_BACKWARD_WS", read_ws, {"1", "0", "64", "80"},
         {ATTENTION_BACKWARD_WS_ON, ATTENTION_BACKWARD_WS_OFF, ATTENTION_BACKWARD_WS_64, ATTENTION_BACKWARD_WS_80},
         ATTENTION_BACKWARD_WS_ON,
         "ATTENTION_BACKWARD_WS must be 1, 0, 64 or 80 (or unset), not \"zigzag\""},
        {"ATTENTION_BACKWARD_CAUSAL_TILE", read_causal_tile, {"80", "64"},
         {ATTENTION_BACKWARD_CAUSAL_TILE_80, ATTENTION_BACKWARD_CAUSAL_TILE_64}, ATTENTION_BACKWARD_CAUSAL_TILE_80,
         "ATTENTION_BACKWARD_CAUSAL_TILE must be 80 or 64 (or unset), not \"zigzag\""},
        {"ATTENTION_BACKWARD_PERSISTENT", read_backward_persistent, {"1", "0"},
         {ATTENTION_BACKWARD_PERSISTENT_ON, ATTENTION_BACKWARD_PERSISTENT_OFF}, ATTENTION_BACKWARD_PERSISTENT_ON,
         "ATTENTION_BACKWARD_PERSISTENT must be 1 or 0 (or unset), not \"zigzag\""},
        {"ATTENTION_FORWARD_BLOCK_N", read_block_n, {"128", "176"},
         {ATTENTION_FORWARD_BLOCK_N_128, ATTENTION_FORWARD_BLOCK_N_176}, ATTENTION_FORWARD_BLOCK_N_176,
         "ATTENTION_FORWARD_BLOCK_N must be 128 or 176 (or unset), not \"zigzag\""},
        {"ATTENTION_FP8_BLOCK_N", read_fp8_block_n, {"192", "128"}, {192, 128}, 192,
         "ATTENTION_FP8_BLOCK_N must be 192 or 128 (or unset), not \"zigzag\""},
        {"ATTENTION_FP8_PERSISTENT", read_fp8_persistent, {"1", "0"}, {1, 0}, 1,
         "ATTENTION_FP8_PERSISTENT must be 1 or 0 (or unset), not \"zigzag\""},
    };
    char message[512];
    for (size_t s = 0; s < sizeof switches / sizeof switches[0]; s++) {
        for (int i = 0; i < 4 && switches[s].spellings[i]; i++)
            assert_int_equal(switch_in_child(switches[s].name, switches[s].spellings[i], switches[s].read_switch,
                                             message, sizeof message),
                             10 + switches[s].values[i]);
        assert_int_equal(switch_in_child(switches[s].name, "", switches[s].read_switch, message, sizeof message),
                         10 + switches[s].unset);
        assert_int_equal(
            switch_in_child(switches[s].name, "zigzag", switches[s].read_switch, message, sizeof message), 1);
        if (!strstr(message, switches[s].refusal))
            fail_msg("%s=zigzag: expected \"%s\", got: %s", switches[s].name, switches[s].refusal, message);
    }
    // A setter refuses a value outside its enum (ATTENTION_FORWARD_BLOCK_N's: 160).
    assert_int_equal(switch_in_child("ATTENTION_FORWARD_BLOCK_N", "", set_block_n_160, message, sizeof message), 1);
    static const char refusal[] =
        "attention_set_forward_block_n: which must be an AttentionForwardBlockN (128 or 176), not 160";
    if (!strstr(message, refusal))
        fail_msg("attention_set_forward_block_n(160): got: %s", message);
    assert_int_equal(switch_in_child("ATTENTION_FP8_BLOCK_N", "", set_fp8_block_n_160, message, sizeof message), 1);
    static const char fp8_refusal[] = "attention_fp8_set_block_n: block_n must be 128 or 192, not 160";
    if (!strstr(message, fp8_refusal))
        fail_msg("attention_fp8_set_block_n(160): got: %s", message);
    // 192-key tiles fit 2 or 3 stages (2 when unset), not 4; 128-key tiles fit all three; a
    // depth outside the list stops with a message.
    const struct {
        const char *stages;
        int (*fits)(void);
        int expected;
    } fits[] = {{"", fp8_192_fits, 1},  {"2", fp8_192_fits, 1}, {"3", fp8_192_fits, 1},
                {"4", fp8_192_fits, 0}, {"4", fp8_128_fits, 1}};
    for (size_t i = 0; i < sizeof fits / sizeof fits[0]; i++)
        assert_int_equal(switch_in_child("ATTENTION_FP8_STAGES", fits[i].stages, fits[i].fits, message, sizeof message),
                         10 + fits[i].expected);
    // ... and the settings check says so, before any GPU work (step 05's --fp8-attention asks it
    // then): refused at 4 stages with the default 192-key tiles, taken at 4 with 128-key ones
    // and at 3 with the default.
    const struct {
        const char *stages;
        int (*refusal)(void);
        int expected;
    } settings[] = {{"4", fp8_settings_refusal_default_tiles, 1},
                    {"4", fp8_settings_refusal_128_tiles, 0},
                    {"3", fp8_settings_refusal_default_tiles, 0},
                    {"", fp8_settings_refusal_default_tiles, 0}};
    for (size_t i = 0; i < sizeof settings / sizeof settings[0]; i++)
        assert_int_equal(switch_in_child("ATTENTION_FP8_STAGES", settings[i].stages, settings[i].refusal, message,
                                         sizeof message),
                         10 + settings[i].expected);
    assert_int_equal(switch_in_child("ATTENTION_FP8_STAGES", "zigzag", fp8_192_fits, message, sizeof message), 1);
    if (!strstr(message, "ATTENTION_FP8_STAGES must be 2, 3 or 4 (or unset), not \"zigzag\""))
        fail_msg("ATTENTION_FP8_STAGES=zigzag: got: %s", message);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        // First: its children inherit this process's switches, which must still be unread
        // (test_backward_swapab_setter, test_backward_ws_setter and test_forward_block_n_setter
        // read three).
        cmocka_unit_test(test_switches),
        cmocka_unit_test(test_hopper_with_sm90a_image), cmocka_unit_test(test_hopper_without_sm90a_image),
        cmocka_unit_test(test_a100),                    cmocka_unit_test(test_99_kib_gpus),
        cmocka_unit_test(test_forced_sets),             cmocka_unit_test(test_every_choice_fits),
        cmocka_unit_test(test_refusals),                cmocka_unit_test(test_unsupported_problems),
        cmocka_unit_test(test_layer_problem),           cmocka_unit_test(test_backward_workspace),
        cmocka_unit_test(test_block_order),
        cmocka_unit_test(test_key_block_order),
        cmocka_unit_test(test_backward_key_order),
        cmocka_unit_test(test_backward_swapab_setter),
        cmocka_unit_test(test_backward_ws_setter), cmocka_unit_test(test_backward_causal_tile_setter),
        cmocka_unit_test(test_backward_persistent_setter),
        cmocka_unit_test(test_forward_block_n_setter),
        cmocka_unit_test(test_persistent_schedule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
