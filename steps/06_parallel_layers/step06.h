#ifndef STEPS_06_PARALLEL_LAYERS_STEP06_H
#define STEPS_06_PARALLEL_LAYERS_STEP06_H

#include "steps/driver/step.h"

extern const StepOps STEP_06_PARALLEL_LAYERS;

// Runs the same parallel layer without the weight fusions (for the comparison).
extern const StepOps STEP_06_PARALLEL_UNFUSED;

// The fused layer with its two GEMMs in FP8 (step 05's recipe).
extern const StepOps STEP_06_PARALLEL_FP8;

#endif
