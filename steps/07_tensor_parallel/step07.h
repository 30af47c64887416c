// Step 07: the layer tensor-parallel over NCCL, one process per GPU.
//
// The flags are the shared ones (steps/driver/step.h: options_parse with this step's
// parse_flag) plus the step's own (--tp, --parallel, --sequence-parallel, --block, --port,
// --timeout, --no-sweep; see flags_help). step07_run does the rest: it refuses what cannot
// run (sizes tp does not divide, more ranks than GPUs) before any rank starts, reads the
// weights and inputs once, then forks the ranks (--tp N) or runs as the rank the
// environment names (mpirun, srun, torchrun-style).
#ifndef STEPS_07_TENSOR_PARALLEL_STEP07_H
#define STEPS_07_TENSOR_PARALLEL_STEP07_H

#include "steps/driver/step.h"

extern const StepOps STEP_07_TENSOR_PARALLEL;

// The whole program after the flags are parsed (into o, with STEP_07_TENSOR_PARALLEL).
// Returns the exit status: 0, or 1 when a rank failed or a check did not pass.
int step07_run(const Options *o);

#endif  // STEPS_07_TENSOR_PARALLEL_STEP07_H
