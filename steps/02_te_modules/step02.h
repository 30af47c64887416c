#ifndef STEPS_02_TE_MODULES_STEP02_H
#define STEPS_02_TE_MODULES_STEP02_H

#include "steps/driver/step.h"

extern const StepOps STEP_02_TE_MODULES;

#endif
