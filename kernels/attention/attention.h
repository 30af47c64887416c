// Fused ("flash") attention, forward and backward, on the tensor cores: the one API.
//
// The [seq x seq] scores never reach device memory. Forward: each block of 128 queries
// streams over tiles of keys, computes S = Q K^T in registers, updates a running maximum
// and sum (the online softmax, reference/attention_reference.h shows it in plain C) and
// accumulates P V; it saves one float per query, the logsumexp, for backward. Backward
// recomputes P block by block from Q, K and the logsumexp (FlashAttention-2's scheme: Dao,
// "FlashAttention-2", 2023; the Hopper kernels follow FlashAttention-3, Shah et al., 2024).
//
// Two sets of kernels do it, chosen per call by attention.cu (attention_choose_kernel):
//   mma.sync (flash_mma.cu): any GPU since Ampere (compute capability 8.0); warps load their
//     operands into registers. Their tiles shrink where shared memory is scarce (99 KiB per
//     block on sm_86 / sm_89 against 163 KiB on an A100).
//   wgmma (flash_forward_wgmma.cu, flash_backward_wgmma.cu, flash_backward_swapab.cu, both
//     head dims; flash_backward_ws.cu, head dim 128): Hopper's
//     warpgroup MMA and TMA copies; only where the GPU is 9.0 (gpu_effective_cc(), which
//     GPU_SIMULATE_CC can lower) AND the running code holds their sm_90a bodies (a build
//     without sm_90a, e.g. PTX for compute_80 JIT-compiled on an H100, does not).
//
// Tensors (row-major, fp16 or bf16, token (s, b) = row s * batch + b):
//   qkv   [seq, batch, heads, 3 * head_dim]: each head's 3 * head_dim values are [q | k | v],
//         as the fused QKV projection writes them; read in place.
//   ctx   [seq, batch, heads, head_dim]; dctx likewise; dqkv has qkv's layout (all of it
//         is written).
//   lse   [batch, heads, seq] float: the logsumexp of each query's scaled scores.
// Either tensor may be a view into a wider one (AttentionProblem's row strides): step 06
// reads qkv from the first 3 * hidden columns of its fused input GEMM's output.
//
// An opt-in FP8 (E4M3) forward, Hopper only, has its own header: attention_fp8.h.
//
// Dropout is drawn inside the kernels from Philox: probability (b, h, i, j) is keyed by
// attention_dropout_index(b * total_heads + first_head + h, i, j, seq) (common/core/philox.h:
// one random byte per element, one call per 16 values a thread holds), so the CPU reference
// and step 01 draw the same mask, and a tensor-parallel rank the mask of the unsharded layer.
#ifndef KERNELS_ATTENTION_ATTENTION_H
#define KERNELS_ATTENTION_ATTENTION_H

#include <stddef.h>
#include <stdint.h>

#include "common/core/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

// The problem: shapes, dtype, layout, mask, and which heads of the layer this call computes.
// Fields left 0 take the plain case, so `{.seq = s, .batch = b, .heads = h, .head_dim = d,
// .dtype = dt}` is a whole, packed, unsharded problem.
typedef struct {
    int seq, batch;
    int heads;     // the heads this call computes (a tensor-parallel rank: its own)
    int head_dim;  // 64 or 128
    DType dtype;   // DTYPE_FP16 or DTYPE_BF16
    int causal;    // 1: query i sees keys j <= i only
    // Layout, in elements: from token (s, b)'s row to token (s, b + 1)'s in qkv (and dqkv),
    // and in ctx (and dctx). 0: packed, 3 * heads * head_dim and heads * head_dim. Larger
    // when the tensor is the first columns of a wider one. Multiples of 8 (16 bytes).
    int64_t qkv_row_stride, ctx_row_stride;
    // Tensor parallelism (step 07): these heads are heads [first_head, first_head + heads)
    // of a layer with total_heads. Only the dropout mask depends on it. 0, 0: unsharded.
    int total_heads, first_head;
    // 1: a bit-reproducible backward - dQ's sum over key blocks in a fixed order (below), so
    // that the same inputs give the same bits on every run. 0 (the default): the fast path,
    // whose float atomics / TMA reductions add the key blocks' shares of dQ in whatever order
    // they arrive (float addition is not associative: the last bits vary from run to run).
    int deterministic;
} AttentionProblem;

// Attention dropout: probability p of zeroing a probability (kept ones are scaled by 1 / (1 -
// p)), the run's seed and this call's Philox offset (dropout_offset(step, site)). p = 0: none.
typedef struct {
    float p;
    uint64_t seed, offset;
} AttentionDropout;

// The problem and the dropout of a whole layer (LayerConfig): packed, unsharded; the dropout
// of training step `step` (dropout_offset(step, DROPOUT_SITE_ATTENTION)).
AttentionProblem attention_layer_problem(const LayerConfig *cfg);
AttentionDropout attention_layer_dropout(const LayerConfig *cfg, uint64_t step);

// NULL if the kernels can compute this problem, else why not (a sentence naming the field).
// Does not need a GPU.
const char *attention_unsupported(const AttentionProblem *p);

// ctx and lse from qkv. Stops with a clear message if the problem is unsupported, a pointer
// is not 16-byte aligned, or no kernel fits this GPU's shared memory.
void attention_forward(const AttentionProblem *p, const AttentionDropout *dropout, const void *qkv, void *ctx,
                       float *lse);

// Bytes of device workspace attention_backward needs: rowsum(dO * O) per query, the swapAB
// and warp-specialised backwards' per-query statistics (lse * log2(e) and rowsum(dO * O)
// again, 2 * batch * heads * (seq rounded up to a multiple of 128 or of 80, whichever is longer)
// floats, reserved whichever backward runs)
// and a float accumulator for dQ ([batch, heads, seq, head_dim] floats), into which every
// block of keys adds its share. Deterministic: instead one such array per block of keys (the
// [key_blocks][batch, heads, seq, head_dim] slices, key_blocks = seq / 64 rounded up, enough
// for any kernel), each written with plain stores by its block, then summed in key-block
// order 0, 1, 2, ... by a small kernel. That is seq / 64 times the memory (4 GiB at b 4,
// heads 32, seq 2048, d 128) - the price of not depending on the order blocks finish in.
size_t attention_backward_workspace_bytes(const AttentionProblem *p);

// dqkv from dctx, with ctx and lse as the forward left them (same problem, same dropout).
void attention_backward(const AttentionProblem *p, const AttentionDropout *dropout, const void *qkv,
                        const void *ctx, const void *dctx, const float *lse, void *dqkv, void *workspace);

// ---- Which kernels run ---------------------------------------------------------------------
// ATTENTION_KERNELS_BEST (the default): wgmma where it can run, else mma.sync with the
// largest tiles that fit. ATTENTION_KERNELS_MMA_SYNC: the mma.sync kernels with the largest
// tiles that fit (what an A100 runs). ATTENTION_KERNELS_MMA_SYNC_SMALL_TILES: the mma.sync
// kernels with the tiles that fit 99 KiB per block (what sm_86 / sm_89 GPUs run). The last two
// let the tests and the benchmark check every kernel on one GPU. Returns the previous choice.
// The environment variable ATTENTION_D64_BACKWARD (read once, at the first call that chooses
// a kernel) picks the best set's backward at head dim 64 on a GPU that runs wgmma, for
// comparing them in one run (attention_kernel_name says which runs):
//   unset or empty           the swapAB wgmma backward (ATTENTION_BACKWARD_SWAPAB, below,
//                            unless that says "0"; else the other wgmma backward, dQ over
//                            each warpgroup's own keys, or by turns when deterministic: the
//                            faster way for each, attention.cu)
//   "wgmma"                  the other wgmma backward, each warpgroup adding dQ over its own
//                            keys (unless ATTENTION_BACKWARD_SWAPAB is "1")
//   "wgmma-turns"            the other wgmma backward, its warpgroups computing dQ by turns
//                            ("wgmma backward (dQ by turns)"; flash_backward_wgmma.cu; unless
//                            ATTENTION_BACKWARD_SWAPAB is "1")
//   "mma"                    the mma.sync backward with the largest tiles that fit, as before
//                            the wgmma backward existed at d 64
// Any other value stops with a message.
typedef enum {
    ATTENTION_KERNELS_BEST,
    ATTENTION_KERNELS_MMA_SYNC,
    ATTENTION_KERNELS_MMA_SYNC_SMALL_TILES,
} AttentionKernels;
AttentionKernels attention_set_kernels(AttentionKernels kernels);

// The best set's wgmma backward with the scores computed transposed ("swapAB",
// flash_backward_swapab.cu; FlashAttention-3's backward): each warpgroup computes S^T = K Q^T
// and dP^T = V dO^T with its 64 keys as the wgmma's M dimension, so that dV += P^T dO and
// dK += dS^T Q take P^T and dS^T straight from registers (the other wgmma backward stores P and
// dS to shared memory and reads them back transposed); 128 queries per step at head dim 64, 64
// at 128. With dropout it draws the forward's mask bit for bit (each Philox group once per
// warpgroup, its bits traded through shared memory by warp ballots: flash_backward_swapab.cu
// says why). Deterministic, it writes one dQ slice per 128 keys.
//   ATTENTION_SWAPAB_POLICY (the default): where it was measured faster - head dim 64 (H200,
//     2026-11-30, b 4, h 32, s 2048, TFLOP/s fp16: 273 -> 371, causal 227 -> 287,
//     deterministic 1.61 -> 1.16 ms; with dropout 0.1 236 -> 270), not 128 (434 -> 403-413;
//     with dropout 369-372 -> 349-354); and at head dim 64 only while ATTENTION_D64_BACKWARD is
//     unset (under the policy a dQ scheme asked for by name runs as asked).
//   ATTENTION_SWAPAB_NEVER, ATTENTION_SWAPAB_WHERE_SUPPORTED: never; wherever the best set runs
//     a wgmma backward, both head dims, dropping or not - then also in place of the dQ schemes
//     ATTENTION_D64_BACKWARD names ("wgmma", "wgmma-turns"; its "mma" still runs mma.sync).
// The environment variable ATTENTION_BACKWARD_SWAPAB gives the first value (read once, as
// ATTENTION_D64_FORWARD): "1" where supported, "0" never, unset or empty the policy; any other
// value stops with a message. attention_set_backward_swapab overrides it from then on (a value
// outside the enum stops with a message) and returns the previous value. attention_kernel_name
// says "swapAB" where it runs. The mma.sync kernels and the forward ignore it.
typedef enum {
    ATTENTION_SWAPAB_POLICY,
    ATTENTION_SWAPAB_NEVER,
    ATTENTION_SWAPAB_WHERE_SUPPORTED,
} AttentionBackwardSwapAB;
AttentionBackwardSwapAB attention_set_backward_swapab(AttentionBackwardSwapAB which);

// The best set's wgmma backward at head dim 128, warp-specialised: FlashAttention-3's layout - a
// producer warpgroup (24 registers: the TMA copies, lse and Dsum into shared memory, the dQ
// reductions) beside two consumer warpgroups (240 registers each) that do the math and nothing
// else - in two kernels:
//   flash_backward_ws_swapab.cu: FlashAttention-3's tiles too - 80 queries a step, S^T, dP^T and
//     dQ^T computed transposed, dK and dV from registers (RS); dropping, the mask drawn transposed.
//   flash_backward_ws.cu: flash_backward_wgmma.cu's math (64 queries a step, the queries as M).
// Not deterministic: a deterministic backward runs the kernel it would run without this switch.
//   ATTENTION_BACKWARD_WS_ON (the default): wherever the best set runs a wgmma backward at head
//     dim 128 and the problem is not deterministic - in place of the swapAB kernel too, should
//     ATTENTION_BACKWARD_SWAPAB put that there: the 80-query kernel, or the 64-query one when
//     dropping. H200, 2026-11-30 (docs/results.md#h200-seventeenth), d 128 backward in turns:
//     482-520 TFLOP/s against the 64-query kernel's 435-482, causal 387-398 against 378-384;
//     dropping, the 80-query kernel is the slower (355-371 against 392-399: its mask, drawn
//     transposed by warp ballots, costs more than the other's drawn in rows). With its mask drawn
//     beside S^T and dP^T instead (while their wgmmas run), still slower: 363-372 against 389-404
//     (docs/results.md#h200-nineteenth).
//   ATTENTION_BACKWARD_WS_64: the 64-query kernel wherever ON runs either (for A/B runs).
//   ATTENTION_BACKWARD_WS_80: the 80-query kernel wherever ON runs either, dropping too.
//   ATTENTION_BACKWARD_WS_OFF: never (flash_backward_wgmma.cu runs, as before them; for A/B runs).
// The environment variable ATTENTION_BACKWARD_WS gives the first value (read once, as
// ATTENTION_D64_FORWARD): "1" or unset or empty on, "64" or "80" that kernel, "0" off; any other
// value stops with a message. attention_set_backward_ws overrides it from then on (a value
// outside the enum stops with a message) and returns the previous value.
// attention_kernel_name says "warp-specialised" where it runs. Head dim 64, the mma.sync kernels
// and the forward ignore it.
typedef enum {
    ATTENTION_BACKWARD_WS_OFF,
    ATTENTION_BACKWARD_WS_ON,
    ATTENTION_BACKWARD_WS_64,
    ATTENTION_BACKWARD_WS_80
} AttentionBackwardWS;
AttentionBackwardWS attention_set_backward_ws(AttentionBackwardWS which);

// The 80-query backward's query tile when causal and not dropping (flash_backward_ws_swapab.cu,
// wherever ATTENTION_BACKWARD_WS runs it):
//   ATTENTION_BACKWARD_CAUSAL_TILE_80 (the default): 80 queries, as when not causal (H200,
//     2026-11-30: 387-398 TFLOP/s, docs/results.md#h200-seventeenth).
//   ATTENTION_BACKWARD_CAUSAL_TILE_64: 64 queries, FlashAttention-3's tile when causal: a block's
//     first tile then starts at its first key (a tile of 80 starts 0-64 queries before it, rows
//     whose scores are all masked). Checked by flash_attention_test's test_backward_ws_causal;
//     H200, 2026-11-30, in turns against 80: 385-398 TFLOP/s against 382-400, even
//     (docs/results.md#h200-nineteenth), so it is not the default.
// The environment variable ATTENTION_BACKWARD_CAUSAL_TILE gives the first value (read once):
// "80" or unset or empty, "64"; any other value stops with a message.
// attention_set_backward_causal_tile overrides it from then on (a value outside the enum stops
// with a message) and returns the previous value. attention_kernel_name adds "swapAB tiles of 64
// queries when causal, not dropping" where they run.
typedef enum { ATTENTION_BACKWARD_CAUSAL_TILE_80, ATTENTION_BACKWARD_CAUSAL_TILE_64 } AttentionBackwardCausalTile;
AttentionBackwardCausalTile attention_set_backward_causal_tile(AttentionBackwardCausalTile which);

// The backward persistent or not: the warp-specialised kernels at d 128 (flash_backward_ws.cu
// says how; flash_backward_ws_swapab.cu does the same) and the swapAB kernel at d 64
// (flash_backward_swapab.cu):
//   ATTENTION_BACKWARD_PERSISTENT_ON (the default): when not causal, one CTA per SM runs block
//     after block, loading the next block's K and V while it writes the last one's dK and dV.
//     At d 64 only when not deterministic. H200, 2026-11-30 (docs/results.md#h200-twelfth),
//     d 64 backward in turns: 375-377 TFLOP/s against 366-367 one block per CTA; with dropout
//     0.1, 0.4-0.5% faster.
//     H200, 2026-11-30, backward TFLOP/s in turns against one block per CTA, 10 pairs in three
//     calls (docs/results.md#h200-eleventh): without dropout 467-484 against 419-471 (faster in
//     9, even in 1), with dropout 0.1 388-409 against 380-400 (faster in 7, even in 2, slower
//     in 1).
//     Causal keeps one block per CTA (persistent it was 11-13% slower: its blocks differ in
//     length, and a fixed assignment leaves SMs idle).
//   ATTENTION_BACKWARD_PERSISTENT_OFF: one block per CTA always (as before; for A/B runs).
// The environment variable ATTENTION_BACKWARD_PERSISTENT gives the first value (read once, as
// ATTENTION_BACKWARD_WS): "1" or unset or empty on, "0" off; any other value stops with a
// message. attention_set_backward_persistent overrides it from then on (a value outside the enum,
// or max_ctas < 0, stops with a message) and returns the previous value; max_ctas > 0 caps the
// persistent launch at that many CTAs (tests: several blocks per CTA at small shapes), 0 one
// per SM. Only those three kernels read it; their results are the same bits either way (the same
// products per block, in the same order).
typedef enum { ATTENTION_BACKWARD_PERSISTENT_OFF, ATTENTION_BACKWARD_PERSISTENT_ON } AttentionBackwardPersistent;
AttentionBackwardPersistent attention_set_backward_persistent(AttentionBackwardPersistent which, int max_ctas);

// Reads every ATTENTION_* switch of this header now (each stops the program with its message on
// a value it does not take: see each switch above). Host code only, no CUDA call: the step
// binaries and compare call it before they look for a GPU, so that a bad value is reported on
// any machine, as a bad flag is. (Without this call each is read at the first attention call.)
void attention_require_valid_switches(void);

// The best set's forward at head dim 64 on a GPU that runs wgmma: the wgmma forward with two
// consumer warpgroups (128 queries per block, as at d 128) or three (192 queries per block;
// flash_forward_wgmma.cu says why). The environment variable ATTENTION_D64_FORWARD gives the
// first value (read once, at the first call that chooses a kernel or sets this):
//   unset or empty, or "wg3"   three consumers ("wgmma forward (3 consumers)"), the default:
//                              H200, fp16, b4 h32 s2048: 430 TFLOP/s against 361 for two
//                              (dropout 281 / 248, causal 322 / 288; docs/results.md)
//   "wg2"                      two consumers ("wgmma forward")
// Any other value stops with a message. attention_set_d64_forward overrides it from then on
// (the tests run both) and returns the previous value. Other head dims, sets and GPUs ignore it.
typedef enum { ATTENTION_D64_FORWARD_WG2, ATTENTION_D64_FORWARD_WG3 } AttentionD64Forward;
AttentionD64Forward attention_set_d64_forward(AttentionD64Forward which);

// The order in which the wgmma kernels run their blocks when causal (without the
// mask every block costs the same and they run in the natural order). Query block x of a head
// visits about (x + 1) * queries per block / 128 tiles of keys, so the last blocks cost the
// most (block_order.h):
//   HEAVY_FIRST           the heaviest blocks of a group of heads first (as many heads as
//                         have their K and V in 32 MiB of L2), then the next heaviest, ...
//   NATURAL               each head's blocks in ascending order, head after head
//   HEAVY_FIRST_PER_HEAD  each head's blocks in descending order, head after head
// The environment variable ATTENTION_CAUSAL_ORDER gives the first value (read once, as
// ATTENTION_D64_FORWARD): unset or empty, or "heavy-first"; "natural"; "heavy-first-per-head".
// Any other value stops with a message. attention_set_causal_order overrides it from then on
// and returns the previous value. The wgmma backward runs key blocks, of which the first is a
// head's heaviest: HEAVY_FIRST is the same grouped order counted from that end; NATURAL and
// HEAVY_FIRST_PER_HEAD both run each head's key blocks in ascending order (heaviest first
// within the head). The mma.sync kernels ignore it.
typedef enum {
    ATTENTION_CAUSAL_HEAVY_FIRST,
    ATTENTION_CAUSAL_NATURAL,
    ATTENTION_CAUSAL_HEAVY_FIRST_PER_HEAD,
} AttentionCausalOrder;
AttentionCausalOrder attention_set_causal_order(AttentionCausalOrder order);

// The wgmma forward persistent or not (flash_forward_wgmma.cu): persistent, one CTA per SM
// (a CTA: a block of threads) loops over the work tiles (64 * consumers queries of a head each,
// in the order above; with the static schedule below, when causal, the CTAs take each round of
// tiles in turn forwards and backwards, block_order.h), and
// its producer loads the next tile's Q, K and V while the consumers still finish the current
// one - hiding each block's start-up and epilogue. The same arithmetic per tile: the same bits.
//   POLICY           persistent where it was measured faster (attention.cu's
//                    forward_persistent_for): today wherever the kernel has the variant
//                    (all but three consumers, d 64's default, with dropout), causal problems
//                    with the dynamic schedule (below) - so the same as WHERE_SUPPORTED.
//   NEVER            never persistent.
//   WHERE_SUPPORTED  persistent wherever the kernel has that variant: everywhere but at 3
//                    consumers (d 64) when dropping (ptxas would spill).
// The environment variable ATTENTION_FORWARD_PERSISTENT gives the first value (read once, as
// ATTENTION_D64_FORWARD): unset or empty, POLICY; "0", NEVER; "1", WHERE_SUPPORTED (for A/B
// measurements). Any other value stops with a message. attention_set_forward_persistent(which,
// max_ctas) overrides it from then on (max_ctas 0: one CTA per SM, n > 0: at most n CTAs, so
// that the tests' small problems give every CTA several work tiles; a negative max_ctas or
// another value of `which` stops with a message) and returns the previous `which`.
// attention_kernel_name says when the forward runs persistent. The mma.sync kernels and the
// backward ignore it.
typedef enum {
    ATTENTION_PERSISTENT_POLICY,
    ATTENTION_PERSISTENT_NEVER,
    ATTENTION_PERSISTENT_WHERE_SUPPORTED,
} AttentionForwardPersistent;
AttentionForwardPersistent attention_set_forward_persistent(AttentionForwardPersistent which, int max_ctas);

// How the persistent wgmma forward's CTAs get their work tiles (flash_forward_wgmma.cu; wherever
// it runs persistent, causal or not):
//   POLICY   dynamic when causal, static otherwise (measured: attention.cu,
//            forward_persistent_for): the default.
//   STATIC   each CTA a fixed list: rounds of one tile per CTA, zig-zag when causal
//            (block_order.h's persistent_work_tile).
//   DYNAMIC  each CTA its first tile of the first round, then the next tile not yet taken, from
//            a global counter, whenever its producer is about ready for one (FlashAttention-3's
//            dynamic scheduler); the tiles in the same order (heaviest first when causal).
// Both compute each tile as the non-persistent kernel does: the same bits. The environment
// variable ATTENTION_PERSISTENT_SCHEDULE gives the first value (read once, as
// ATTENTION_D64_FORWARD): unset or empty (the policy), "static" or "dynamic". Any other value
// stops with a message. attention_set_persistent_schedule overrides it from then on (another value of
// `which` stops with a message) and returns the previous value. attention_kernel_name says
// "dynamic schedule" when the forward runs persistent with it.
typedef enum {
    ATTENTION_SCHEDULE_POLICY,
    ATTENTION_SCHEDULE_STATIC,
    ATTENTION_SCHEDULE_DYNAMIC,
} AttentionPersistentSchedule;
AttentionPersistentSchedule attention_set_persistent_schedule(AttentionPersistentSchedule which);

// The best set's wgmma forward at head dim 128: keys per K/V tile (flash_forward_wgmma.cu).
// Wider tiles spread every per-tile fixed cost - the row max and sum shuffles, rescaling the
// output accumulators, the consumers' turns and barrier waits - over more keys
// (FlashAttention-3's tile at d 128 without the causal mask); shared memory 209 KiB per block
// instead of 161.
//   ATTENTION_FORWARD_BLOCK_N_176 (the default): 176-key tiles where the problem is neither
//     causal nor dropping (the dropout mask is drawn per 64 keys, and the causal tile logic
//     assumes 128); 128 elsewhere. Measured faster on an H200 (docs/results.md #h200-eighth).
//   ATTENTION_FORWARD_BLOCK_N_128: 128-key tiles everywhere, as before.
// The environment variable ATTENTION_FORWARD_BLOCK_N gives the first value (read once, as
// ATTENTION_D64_FORWARD): unset or empty, or "176"; "128". Any other value stops with a
// message. attention_set_forward_block_n overrides it from then on (a value outside the enum
// stops with a message) and returns the previous value. attention_kernel_name says "176-key
// tiles" where it runs. Head dim 64, the mma.sync kernels, GPUs without wgmma and the backward
// ignore it.
typedef enum { ATTENTION_FORWARD_BLOCK_N_128 = 128, ATTENTION_FORWARD_BLOCK_N_176 = 176 } AttentionForwardBlockN;
AttentionForwardBlockN attention_set_forward_block_n(AttentionForwardBlockN which);

typedef enum { ATTENTION_FORWARD, ATTENTION_BACKWARD } AttentionPass;

// What the choice depends on: the GPU as dispatch sees it.
typedef struct {
    int cc;                     // compute capability, 10 * major + minor (gpu_effective_cc())
    int wgmma_image_loaded;     // 1: the running code holds the wgmma kernels' sm_90a bodies
    size_t max_smem_per_block;  // bytes of dynamic shared memory a block may use
} AttentionDevice;

typedef struct {
    const char *kernel;  // e.g. "mma.sync forward (2 K/V stages)", for messages and tables
    int wgmma;           // 1: the Hopper kernel
    int tile;            // mma.sync forward: K/V stages (2, 1); backward: keys per block (128, 64)
    size_t smem_bytes;   // dynamic shared memory per block
} AttentionKernelChoice;

// The kernel of one pass: a pure function of its arguments (tested on the CPU). NULL with
// *choice filled, or, when nothing fits, a sentence naming the kernel, the bytes it needs
// and the limit, written into why[n].
const char *attention_choose_kernel(const AttentionDevice *device, AttentionKernels kernels, AttentionPass pass,
                                    int head_dim, AttentionKernelChoice *choice, char *why, size_t n);

// The kernel that attention_forward / attention_backward would run here now (after
// gpu_require), for tables and logs.
const char *attention_kernel_name(AttentionPass pass, int head_dim);

#ifdef __cplusplus
}
#endif

#endif  // KERNELS_ATTENTION_ATTENTION_H
