// Every step that exists, in order, for the comparison (steps/compare.c).
#ifndef STEPS_REGISTRY_H
#define STEPS_REGISTRY_H

#include "common/step.h"

extern const StepOps *const ALL_STEPS[];
extern const int NUM_STEPS;

#endif  // STEPS_REGISTRY_H
