// Step 01: the naive GPU port - the layer as eager PyTorch runs it, one kernel per op.
#ifndef STEPS_01_NAIVE_STEP01_H
#define STEPS_01_NAIVE_STEP01_H

#include "steps/driver/step.h"

#ifdef __cplusplus
extern "C" {
#endif

extern const StepOps STEP_01_NAIVE;

#ifdef __cplusplus
}
#endif

#endif  // STEPS_01_NAIVE_STEP01_H
