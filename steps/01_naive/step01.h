#ifndef STEPS_01_NAIVE_STEP01_H
#define STEPS_01_NAIVE_STEP01_H

#include "common/step.h"

extern const StepOps STEP_01_NAIVE;

#endif
