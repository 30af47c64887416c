#ifndef STEPS_04_TRANSFORMER_LAYER_STEP04_H
#define STEPS_04_TRANSFORMER_LAYER_STEP04_H

#include "steps/driver/step.h"

extern const StepOps STEP_04_TRANSFORMER_LAYER;
// The MLP's weight-gradient GEMMs on a second stream (transformer_layer_set_overlap_wgrad) for
// the layers the step creates from now on: 1 (the default) or 0 (what --no-overlap-wgrad sets).
// For tests.
void step04_set_overlap_wgrad(int on);

#endif
