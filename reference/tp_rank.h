// One rank of step 07's serial layer simulated on the CPU (reference/tp_layer_reference.c):
// what it holds, and the layer's backward pass on the tp ranks (tp_serial_backward, the graded
// exercise "tp_backward": docs/exercises.md). The forward pass and the entry points are in
// tp_layer_reference.c; the collectives in reference/tp_reference.h.
#ifndef REFERENCE_TP_RANK_H
#define REFERENCE_TP_RANK_H

#include <stdint.h>

#include "common/core/layer.h"
#include "reference/tp_reference.h"

#ifdef __cplusplus
extern "C" {
#endif

// What one rank holds: its parameter shards and its activations, float32, row-major.
// Sizes: T tokens, h hidden, H heads, f ffn; per rank hl = h/tp, Hl = H/tp, fl = f/tp, and Tl
// tokens in the replicated part (LayerNorms, dropout, residuals): all T in plain TP, the
// rank's slice of the sequence, tokens [r Tl, (r+1) Tl) with Tl = T/tp, under sequence
// parallelism. Names ending in _loc are [Tl, ...]; the rest are [T, ...].
typedef struct {
    LayerParams w, g;                        // shards (tp_shard_params' shapes; the caller's, read
                                             //   only) and their gradients
    // the forward pass, saved for the backward
    float *x_loc, *dout_loc;                 // [Tl, h]: the rank's tokens of x and of dy (the loss's
                                             //   gradient at the layer's output)
    float *a_loc, *ln1_mean, *ln1_rstd, *a;  // LN1's output [Tl, h], its stats [Tl]; a: all-gathered [T, h]
    float *qkv, *probs, *ctx;                // [T, 3hl] (this rank's heads), [b, Hl, s, s], [T, hl]
    float *p, *p_loc, *y_loc;                // Proj's partial output [T, h]; reduced [Tl, h]; y [Tl, h]
    float *b_loc, *ln2_mean, *ln2_rstd, *b;  // LN2's output [Tl, h], stats [Tl]; all-gathered [T, h]
    float *fc1, *gelu, *o, *out_loc;         // [T, fl] x2; FC2's partial output [T, h]; out [Tl, h]
    // the backward pass: the gradient of the loss with respect to ...
    float *dout;                             // [T, h]    ... out, for every token
    float *d_gelu, *d_fc1;                   // [T, fl]   ... GELU's output and input
    float *d_ln2, *d_ln2_loc;                // [T, h]    ... LN2's output (b); [Tl, h]: the rank's tokens
    float *dy_loc;                           // [Tl, h]   ... y
    float *d_proj_loc, *d_proj;              // [Tl, h]   ... Proj's output (p); [T, h]: every token
    float *d_ctx, *d_qkv;                    // [T, hl], [T, 3hl] ... this rank's ctx and q, k, v
    float *d_ln1, *d_ln1_loc;                // [T, h]    ... LN1's output (a); [Tl, h]: the rank's tokens
    float *dx_loc;                           // [Tl, h]   ... the layer's input x
} TpSerialRank;

// The serial layer's backward pass on tp ranks, after its forward pass filled the ranks.
// Plain TP (sequence_parallel = 0) or sequence parallelism (1). Writes every rank's dx_loc
// and its parameter gradients g (overwritten); gathered, they must equal the unsharded
// ref_layer_train_step's. Under sequence parallelism, leave the replicated parameters'
// gradients (LN1, LN2, the Proj and FC2 biases) as the rank computed them: the caller
// all-reduces them (tp_layer_reference.c; chapter 07, "Sequence parallelism").
void tp_serial_backward(const LayerConfig *cfg, int tp, int sequence_parallel, TpSerialRank *ranks,
                        uint64_t step);

#ifdef __cplusplus
}
#endif

#endif  // REFERENCE_TP_RANK_H
