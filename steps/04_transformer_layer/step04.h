#ifndef STEPS_04_TRANSFORMER_LAYER_STEP04_H
#define STEPS_04_TRANSFORMER_LAYER_STEP04_H

#include "steps/driver/step.h"

extern const StepOps STEP_04_TRANSFORMER_LAYER;

#endif
