// The order in which the Hopper kernels' blocks run (flash_forward_wgmma.cu; the backward,
// flash_backward_wgmma.cu, counts its key blocks from the other end, as there the first key
// block is the heaviest): which query block of which (batch, head) the block with linear
// index `linear` computes. Plain C and CUDA
// at once, so that the CPU test (tests/attention/attention_dispatch_test.c) checks the very
// function the kernel uses.
//
// The GPU starts a grid's blocks roughly in order of their linear index, as SMs free up.
// Without the causal mask every block of queries costs the same; with it, query block x of a
// head has about (x + 1) * queries per block / 128 tiles of keys to visit, so the last blocks of a head cost
// up to seq / 128 times the first. Started last, a heavy block leaves the other SMs idle while
// it finishes alone; started first, the light ones fill the tail (FlashAttention-3 orders its
// causal tiles so).
//
//   natural (group_heads = 0): linear = query_block + query_blocks * bh - query blocks of one
//     head in ascending order, one head after another (as a grid of (query_blocks, bh)).
//   heavy first (group_heads = G >= 1): the heads in groups of G (the last group may hold
//     fewer); within a group the heaviest query block of each of its heads first, then the
//     next heaviest of each, and so on. With G = 1 that is simply each head's query blocks in
//     descending order; a larger G puts the heavy blocks of more heads ahead of the light
//     ones, but every block that runs at once then reads a different head's K and V: G is
//     chosen so that a group's K and V fit in L2 (flash_forward_wgmma.cu).
#ifndef KERNELS_ATTENTION_BLOCK_ORDER_H
#define KERNELS_ATTENTION_BLOCK_ORDER_H

#if defined(__CUDACC__)
#define BLOCK_ORDER_FN static __host__ __device__ __forceinline__
#else
#define BLOCK_ORDER_FN static inline
#endif

typedef struct {
    int query_block;  // 0 .. query_blocks - 1
    int bh;           // batch * heads index, 0 .. bh_count - 1
} FlashBlock;

// linear in [0, query_blocks * bh_count); group_heads 0 (natural) or >= 1 (heavy first).
BLOCK_ORDER_FN FlashBlock flash_block_at(int linear, int query_blocks, int bh_count, int group_heads) {
    FlashBlock blk;
    if (group_heads <= 0) {
        blk.query_block = linear % query_blocks;
        blk.bh = linear / query_blocks;
        return blk;
    }
    const int group = linear / (group_heads * query_blocks);  // which group of heads
    const int first_bh = group * group_heads;
    const int heads_here = bh_count - first_bh < group_heads ? bh_count - first_bh : group_heads;
    const int within = linear - group * group_heads * query_blocks;  // < heads_here * query_blocks
    blk.query_block = query_blocks - 1 - within / heads_here;
    blk.bh = first_bh + within % heads_here;
    return blk;
}

// The backward's order of key blocks (flash_backward_wgmma.cu): which key block of which
// (batch, head) the block with linear index `linear` computes. When causal, key block kb
// visits the query tiles from its own diagonal on, so key block 0 is a head's heaviest - the
// mirror of the forward, whose last query block is. group_heads 0: each head's key blocks in
// ascending order, one head after another (heaviest first within a head already); G >= 1:
// flash_block_at's heavy-first order over groups of G heads, with key blocks counted from the
// other end. The returned FlashBlock's query_block field holds the key block.
BLOCK_ORDER_FN FlashBlock flash_key_block_at(int linear, int key_blocks, int bh_count, int group_heads) {
    FlashBlock blk = flash_block_at(linear, key_blocks, bh_count, group_heads);
    if (group_heads > 0) blk.query_block = key_blocks - 1 - blk.query_block;
    return blk;
}

// What a backward launch passes its kernel for flash_key_block_at: key_blocks per head and
// group_heads (0: natural; G >= 1: heavy first over groups of G heads).
typedef struct {
    int key_blocks, group_heads;
} KeyBlockOrder;

// The heavy-first order's heads per group: as many heads as have two [seq x head_dim] 16-bit
// tensors (the forward's K and V; the backward's Q and dO, which each of its blocks reads
// whole) in 32 MiB of L2 together, so that the blocks running at once, which belong to
// different heads, still find them in L2 (an H100's or H200's L2 holds 50 MB;
// FlashAttention-3 groups heads by the same reckoning). At least 1, at most bh_count.
BLOCK_ORDER_FN int flash_heavy_first_group_heads(int seq, int head_dim, int bh_count) {
    const long long per_head = 2LL * seq * head_dim * 2, l2_budget = 32LL << 20;
    const long long fit = l2_budget / per_head;
    return (int)(fit < 1 ? 1 : fit > bh_count ? bh_count : fit);
}

// The key-block order of a backward launch with block_keys keys per block (both wgmma
// backwards, flash_backward_wgmma.cu and flash_backward_swapab.cu): without the mask every key
// block costs the same and they run in the natural order; causal with heavy_first (the
// ATTENTION_CAUSAL_HEAVY_FIRST order) grouped heavy first; causal otherwise natural, which is
// heaviest first within each head already (key block 0 visits the most query tiles).
BLOCK_ORDER_FN KeyBlockOrder flash_backward_key_order(int seq, int head_dim, int bh_count, int block_keys, int causal,
                                                      int heavy_first) {
    KeyBlockOrder order;
    order.key_blocks = (seq + block_keys - 1) / block_keys;
    order.group_heads = causal && heavy_first ? flash_heavy_first_group_heads(seq, head_dim, bh_count) : 0;
    return order;
}

// The persistent forward's schedule: which work tiles (the linear indices above, 0 ..
// work_tiles - 1) each of its `ctas` CTAs computes. In round r the CTAs take tiles r * ctas ..
// r * ctas + ctas - 1, one each; only the last round may hold fewer tiles than CTAs.
//   straight (zigzag = 0): CTA i takes tile r * ctas + i of every round - fine when every tile
//     costs the same (no causal mask).
//   zig-zag (zigzag = 1, boustrophedon): as straight in even rounds, reversed in odd ones (CTA
//     i takes r * ctas + ctas - 1 - i). With the causal mask the tiles of a round come heaviest
//     first, so the straight schedule gives CTA 0 the heaviest tile of every round; zig-zag
//     pairs a round's heaviest with the next round's lightest, and the CTA that finished a
//     round first (the lightest tile) starts the next round's heaviest.
// A CTA's tiles, in the order it computes them, are its tiles of rounds 0, 1, ...: the j-th is
// persistent_work_tile(j, ...) for j < persistent_tile_count(...). With ctas <= work_tiles
// (the launcher's grid) round 0 is full, so every CTA has at least one tile (which the
// kernel's turns between consumers need).
BLOCK_ORDER_FN int persistent_work_tile(int j, int cta, int ctas, int zigzag) {
    const int place = zigzag && j % 2 == 1 ? ctas - 1 - cta : cta;  // within round j
    return j * ctas + place;
}

BLOCK_ORDER_FN int persistent_tile_count(int cta, int ctas, int work_tiles, int zigzag) {
    const int full_rounds = work_tiles / ctas, last_round_tiles = work_tiles % ctas;
    // Round full_rounds holds tiles of places 0 .. last_round_tiles - 1 only.
    const int place = zigzag && full_rounds % 2 == 1 ? ctas - 1 - cta : cta;
    return full_rounds + (place < last_round_tiles ? 1 : 0);
}

#endif  // KERNELS_ATTENTION_BLOCK_ORDER_H
