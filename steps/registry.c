#include "steps/registry.h"

// A new step joins the comparison here (and in steps/BUILD's compare deps).
const StepOps *const ALL_STEPS[] = {
    NULL,
};
const int NUM_STEPS = 0;
