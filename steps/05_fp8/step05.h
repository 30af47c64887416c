#ifndef STEPS_05_FP8_STEP05_H
#define STEPS_05_FP8_STEP05_H

#include "steps/driver/step.h"

extern const StepOps STEP_05_FP8;

#endif
