// Megatron-style tensor parallelism, simulated on the CPU: the reference layer applied shard
// by shard for `tp` ranks inside one process, with the partial sums added up exactly where
// the GPUs would call ncclAllReduce. It is how step 07 is proven without a GPU: the sharded
// computation, gathered, must equal the unsharded reference (ref_layer_train_step).
//
// How the layer is cut (Megatron-LM, Shoeybi et al. 2019). Every rank holds the whole input
// x and runs the LayerNorms itself (replicated); the two pairs of linears are cut so that
// each pair needs ONE all-reduce forward and ONE backward:
//
//   qkv   column-parallel by heads: rank r owns heads [r H/tp, (r+1) H/tp). W_qkv's rows are
//         ordered [head][q|k|v][d], so a head group is one contiguous block of 3h/tp rows.
//   attn  local: a head only looks at its own q, k, v.
//   proj  row-parallel: rank r owns the h/tp input columns of its heads and produces a
//         PARTIAL [T, h] output; all-reduce(sum), then the bias, once.
//   fc1   column-parallel (f/tp output rows), GELU local.
//   fc2   row-parallel, partial outputs, all-reduce, bias once.
//
// Parameters are sharded (qkv, fc1 weight and bias by rows; proj, fc2 weight by columns) or
// replicated (LN1, LN2, proj bias, fc2 bias). Which gradients the backward pass all-reduces -
// of the activations and of the parameters - is the graded exercise "tp_backward"
// (exercises/tp_backward.c, chapter 07; docs/exercises.md).
//
// This file: how the parameters are cut, the collectives simulated, the fused shards of the
// parallel layer, and step 07's own Linear -> LayerNorm -> Linear block.
#ifndef REFERENCE_TP_REFERENCE_H
#define REFERENCE_TP_REFERENCE_H

#include <stdint.h>

#include "common/core/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TP_MAX_RANKS 64

// How a parameter is split across the ranks.
typedef enum {
    TP_REPLICATED = 0,  // every rank holds all of it
    TP_SPLIT_ROWS = 1,  // column-parallel linear: rank r holds output rows [r n/tp, (r+1) n/tp)
    TP_SPLIT_COLS = 2,  // row-parallel linear: rank r holds input columns [r n/tp, (r+1) n/tp)
} TpSplit;

TpSplit tp_param_split(int id);
const char *tp_split_name(TpSplit s);  // "replicated", "rows", "columns"

// NULL if the layer can be cut tp ways, else a message saying why not (tp must divide the
// heads, and so hidden and 3 hidden, and the ffn width).
const char *tp_config_problem(const LayerConfig *cfg, int tp);

// Shape of one rank's shard of a parameter; returns ndim.
int tp_param_shard_shape(const LayerConfig *cfg, int tp, int id, int64_t shape[2]);
int64_t tp_param_shard_numel(const LayerConfig *cfg, int tp, int id);

// Shard-on-load: allocates `shard` and copies rank `rank`'s part of the unsharded parameters.
void tp_shard_params(const LayerConfig *cfg, int tp, int rank, const LayerParams *full,
                     LayerParams *shard);
// Gathers tp shards back into unsharded tensors (full must be allocated, unsharded shapes):
// split parameters are concatenated, replicated ones are taken from rank 0.
void tp_gather_params(const LayerConfig *cfg, int tp, const LayerParams *shards,
                      LayerParams *full);

// ---- The collectives, simulated: every rank's buffer is in this one process ---------------
// Sums are taken in float, the partials added in rank order, as the GPUs' fp32 reduction
// might; n is the number of elements of one buffer (all-reduce) or of one slice.
//   all-reduce      bufs[r][n] = sum over ranks, written back into every one of them
//   all-gather      full[r][tp * n] = slice[0] | slice[1] | ... (each [n])
//   reduce-scatter  slice[r][n] = part r of the sum over ranks of full[*][tp * n]
void tp_sim_all_reduce(float *const *bufs, int tp, int64_t n);
void tp_sim_all_gather(const float *const *slice, float *const *full, int tp, int64_t n);
void tp_sim_reduce_scatter(const float *const *full, float *const *slice, int tp, int64_t n);

// The same on one named buffer of every rank, where `ranks` is an array of per-rank structs:
// TP_RANK_BUFS(name, ranks, tp, field) declares float *name[TP_MAX_RANKS] holding every
// rank's `field`; TP_ALL_REDUCE(ranks, tp, field, n) all-reduces ranks[*].field[0..n).
#define TP_RANK_BUFS(name, ranks, tp, field) \
    float *name[TP_MAX_RANKS] = {0};         \
    for (int r_ = 0; r_ < (tp); r_++) name[r_] = (ranks)[r_].field

#define TP_ALL_REDUCE(ranks, tp, field, n)     \
    do {                                       \
        TP_RANK_BUFS(bufs_, ranks, tp, field); \
        tp_sim_all_reduce(bufs_, (tp), (n));   \
    } while (0)

// ---- At the boundary of the tensor-parallel region (reference/tp_layer_reference.h) ---------
// The replicated part of the layer (LayerNorms, dropout, residuals) holds Tl tokens per rank:
// all T in plain TP, the rank's T/tp slice of the sequence under sequence parallelism (sp).
// Buffers of that part are [Tl, h] ("loc"); the GEMMs between read and write [T, h].
//   tp_gather_tokens  entering the region: a GEMM that needs all T tokens (forward: a
//                     column-parallel GEMM's input):
//                     plain TP: full[r] = loc[r] (a copy: the rank has them all);
//                     sp: all-gather of the [T/tp, h] slices. n = Tl * h (one slice).
//   tp_reduce_tokens  leaving the region with a [T, h] result that is a PARTIAL sum on each
//                     rank (forward: a row-parallel GEMM's output):
//                     plain TP: all-reduce, then loc[r] = the sum (partial[r] holds it too);
//                     sp: reduce-scatter, loc[r] = rank r's slice of the sum. n = Tl * h.
void tp_gather_tokens(int tp, int sp, float *const *loc, float *const *full, int64_t n);
void tp_reduce_tokens(int tp, int sp, float *const *partial, float *const *loc, int64_t n);

// The same on named buffers of every rank, e.g. the forward's TP_REDUCE_TOKENS(ranks, tp, sp,
// p, p_loc, Tl * h): ranks[*].p [T, h] (partial) -> ranks[*].p_loc [Tl, h].
#define TP_GATHER_TOKENS(ranks, tp, sp, loc_field, full_field, n) \
    do {                                                          \
        TP_RANK_BUFS(loc_, ranks, tp, loc_field);                 \
        TP_RANK_BUFS(full_, ranks, tp, full_field);               \
        tp_gather_tokens((tp), (sp), loc_, full_, (n));           \
    } while (0)

#define TP_REDUCE_TOKENS(ranks, tp, sp, partial_field, loc_field, n) \
    do {                                                             \
        TP_RANK_BUFS(partial_, ranks, tp, partial_field);            \
        TP_RANK_BUFS(loc_, ranks, tp, loc_field);                    \
        tp_reduce_tokens((tp), (sp), partial_, loc_, (n));           \
    } while (0)

// Dropout (forward, or backward: the same mask and scale) on elements [first, first + n) of
// the whole [T, h] tensor: ref_dropout_forward keyed by each element's index in the
// unsharded tensor, so that a slice draws the unsharded layer's mask.
void tp_dropout_at(const float *x, int64_t n, float p, uint64_t seed, uint64_t offset, uint64_t first,
                   float *y);

// db[cols] = sum over the rows of dy [rows, cols], summed in double: a bias's gradient over
// the rank's own tokens (overwrites db).
void tp_column_sums(const float *dy, int64_t rows, int cols, float *db);

// ---- One rank's weights of step 06's parallel layer, fused -------------------------------
// The parallel layer (reference/parallel_reference.h) under TP: rank r's shards of the
// separate weights (tp_shard_params), stacked the way its two GEMMs read them:
//   w_in  [3h/tp + f/tp, h] = [W_qkv rows of its heads ; W_fc1 rows r]     column-parallel
//   b_in  [3h/tp + f/tp]    = [b_qkv of its heads ; b_fc1 rows r]
//   w_out [h, h/tp + f/tp]  = [W_proj columns of its heads | W_fc2 columns r]  row-parallel
//   b_out [h]               = b_proj + b_fc2: replicated, added once after the sum
//   ln_weight, ln_bias [h]  = ln1: replicated (ln2 is not used by the parallel layer)
typedef struct {
    int hidden, n_in, k_out;  // h, 3h/tp + f/tp, h/tp + f/tp
    float *ln_weight, *ln_bias, *w_in, *b_in, *w_out, *b_out;
} TpFusedShard;

void tp_fused_shard_alloc(const LayerConfig *cfg, int tp, TpFusedShard *f);  // zero-filled
void tp_fused_shard_free(TpFusedShard *f);
// shard: one rank's separate shards (tp_shard_params) -> f (allocated by the caller).
void tp_fuse_shard(const LayerConfig *cfg, int tp, const LayerParams *shard, TpFusedShard *f);
// Gradients of a fused shard -> the separate layout of a shard (allocated, shard shapes):
// b_out's gradient is the gradient of both output biases (they enter as a sum), ln2's is 0.
void tp_unfuse_shard_grads(const LayerConfig *cfg, int tp, const TpFusedShard *grad, LayerParams *shard_grads);

// ---- The step's own block: column-parallel Linear -> LayerNorm(f) -> row-parallel Linear ----
// out = LN(x W1^T + b1) W2^T + b2, with x, out [T, h] and the LayerNorm over the f features.
// Under TP the LayerNorm's input is split across the ranks by features. Two ways to cope:
typedef enum {
    TP_LN_SHARD_LOCAL = 0,  // each rank normalises its own f/tp slice with its own gamma/beta
                            // slice: a GroupNorm with tp groups, NOT the unsharded function
    TP_LN_EXACT = 1,        // per token, all-reduce the slice's sum and sum of squares (2
                            // floats) for full-width statistics; backward all-reduces
                            // sum(dy gamma) and sum(dy gamma xhat): the unsharded function
} TpLnMode;

typedef struct {
    int hidden, ffn;
    float *w1, *b1;       // [f, h], [f]
    float *gamma, *beta;  // [f]
    float *w2, *b2;       // [h, f], [h]
} TpBlock;

void tp_block_alloc(TpBlock *b, int hidden, int ffn);  // zero-filled
void tp_block_free(TpBlock *b);
void tp_block_init_random(TpBlock *b, uint64_t seed);

typedef struct {
    float *out, *dx;  // [T, h]
    TpBlock grad;     // gradients, unsharded shapes (gathered)
} TpBlockResults;

void tp_block_results_alloc(TpBlockResults *r, int64_t tokens, int hidden, int ffn);
void tp_block_results_free(TpBlockResults *r);

// The unsharded block, forward and backward, on the reference/reference.h ops.
void tp_block_reference(const TpBlock *p, const float *x, const float *dout, int64_t tokens,
                        float eps, TpBlockResults *res);
// The same cut tp ways (fc1 column-parallel, fc2 row-parallel), LayerNorm in `mode`; the
// gradients are gathered into res->grad.
void tp_block_sim(const TpBlock *p, const float *x, const float *dout, int64_t tokens, float eps,
                  int tp, TpLnMode mode, TpBlockResults *res);
// NULL if the block can be cut tp ways, else why not.
const char *tp_block_problem(int hidden, int ffn, int tp);

#ifdef __cplusplus
}
#endif

#endif  // REFERENCE_TP_REFERENCE_H
