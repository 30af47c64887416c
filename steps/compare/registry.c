#include "steps/compare/registry.h"

#include "steps/01_naive/step01.h"
#include "steps/02_te_modules/step02.h"
#include "steps/03_fused_modules/step03.h"
#include "steps/04_transformer_layer/step04.h"
#include "steps/05_fp8/step05.h"
#include "steps/06_parallel_layers/step06.h"

// A new step joins the comparison here (and in steps/BUILD's registry deps).
const StepOps *const ALL_STEPS[] = {
    &STEP_01_NAIVE,
    &STEP_02_TE_MODULES,
    &STEP_03_FUSED_MODULES,
    &STEP_04_TRANSFORMER_LAYER,
    &STEP_05_FP8,
    &STEP_06_PARALLEL_UNFUSED,
    &STEP_06_PARALLEL_LAYERS,
    &STEP_06_PARALLEL_FP8,
};
const int NUM_STEPS = (int)(sizeof ALL_STEPS / sizeof ALL_STEPS[0]);
