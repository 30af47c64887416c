#ifndef STEPS_03_FUSED_MODULES_STEP03_H
#define STEPS_03_FUSED_MODULES_STEP03_H

#include "steps/driver/step.h"

extern const StepOps STEP_03_FUSED_MODULES;

#endif
