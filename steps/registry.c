#include "steps/registry.h"

#include "steps/01_naive/step01.h"

// A new step joins the comparison here (and in steps/BUILD's registry deps).
const StepOps *const ALL_STEPS[] = {
    &STEP_01_NAIVE,
};
const int NUM_STEPS = (int)(sizeof ALL_STEPS / sizeof ALL_STEPS[0]);
