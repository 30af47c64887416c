// --check on every rank: what each rank holds against the CPU.
//
//   the layer  out and dx (the rank's tokens: all of them in plain TP, its slice under
//              sequence parallelism) and every gradient it holds - its own shard of a split
//              parameter, the whole of a replicated one - against the UNSHARDED reference
//              of its variant (ref_layer_train_step or ref_parallel_train_step, step 0), its
//              gradients cut like the parameters (tp_shard_params)
//   the block  out, dx and the rank's gradient slices against the CPU simulation of the same
//              LayerNorm mode (tp_block_sim: for the shard-local mode that is NOT the
//              unsharded block), and, for information, out against the unsharded block
// Tolerance: check_tolerance(dtype). One line per tensor, then
// "rank r  check: CHECK PASSED|CHECK FAILED, max relative error ..." (the other steps' words).
#ifndef STEPS_07_TENSOR_PARALLEL_TP_CHECK_H
#define STEPS_07_TENSOR_PARALLEL_TP_CHECK_H

#include "common/core/layer.h"
#include "reference/tp_reference.h"
#include "steps/07_tensor_parallel/tp_block.h"
#include "steps/07_tensor_parallel/tp_layer.h"

// After one synchronised training step at step index 0. Returns 1 if passed; *worst gets
// the largest relative error.
int tp_check_layer_rank(const LayerConfig *cfg, int tp, int rank, const TpLayer *layer, const LayerParams *full,
                        const LayerInputs *in, double *worst);
int tp_check_block_rank(const LayerConfig *cfg, int tp, int rank, const TpBlockGpu *block, const TpBlock *params,
                        const float *x, const float *dout, double *worst);

#endif  // STEPS_07_TENSOR_PARALLEL_TP_CHECK_H
