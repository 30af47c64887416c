// What the FP8 steps (05, and 06 with --fp8) share besides their modules: the recipe's
// command-line flags, and the CPU reference's rounding of a first training step.
#ifndef COMMON_FP8_STEP_H
#define COMMON_FP8_STEP_H

#include "common/fp8_recipe.h"
#include "common/reference.h"

#ifdef __cplusplus
extern "C" {
#endif

// --fp8-format, --amax-history, --amax-algo, --margin into *recipe: 1 if flag was one of
// them (bad values are a clear error), 0 if not.
int fp8_recipe_parse_flag(DelayedScaling *recipe, const char *flag, const char *value);
#define FP8_RECIPE_FLAGS_HELP                                                             \
    "  --fp8-format hybrid|e4m3   HYBRID: E4M3 forward, E5M2 gradients (default)\n"     \
    "  --amax-history N           steps of amax remembered (default 16)\n"               \
    "  --amax-algo max|most_recent  which amax sets the scale (default max)\n"           \
    "  --margin N                 scale = fp8_max / amax / 2^N (default 0)\n"

// The rounding of an FP8 step's first iteration, for the CPU reference: every Linear's input
// and weight to E4M3 and its output gradient to the recipe's gradient format, all with
// scale 1 (what the GPU uses before any amax has been seen). q->ctx points at the recipe.
RefQuantizer fp8_first_step_quantizer(const DelayedScaling *recipe);

// The tolerance of such a check: two products of FP8 operands agree to FP8's rounding of
// activations computed in 16 bits vs in float (an element near a rounding boundary can land
// one FP8 step away: 6-12% for that element), so wider than fp16's; still 10x tighter than
// the error against the unrounded reference.
double fp8_check_tolerance(DType dtype);

#ifdef __cplusplus
}
#endif

#endif  // COMMON_FP8_STEP_H
