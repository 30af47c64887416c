// Every step that exists, in order, for the comparison (steps/compare/compare.c).
#ifndef STEPS_COMPARE_REGISTRY_H
#define STEPS_COMPARE_REGISTRY_H

#include "steps/driver/step.h"

extern const StepOps *const ALL_STEPS[];
extern const int NUM_STEPS;

#endif  // STEPS_COMPARE_REGISTRY_H
