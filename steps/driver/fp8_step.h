// What the FP8 steps (05, and 06 with --fp8) share besides their modules: the recipe's
// command-line flags, and the CPU reference's rounding of a first training step.
#ifndef STEPS_DRIVER_FP8_STEP_H
#define STEPS_DRIVER_FP8_STEP_H

#include "common/fp8/fp8_recipe.h"
#include "reference/reference.h"

#ifdef __cplusplus
extern "C" {
#endif

// --fp8-format, --amax-history, --amax-algo, --margin into *recipe: 1 if flag was one of
// them, 0 if not (or if value is NULL: none of them is a switch). Values are parsed strictly
// (common/core/flags.h): "--margin 2x" or "--amax-history 16abc" is an error, not 2 or 16.
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

// The tolerance of such a check. FP8's steps are coarse (E5M2's 25% apart), so where the GPU's
// 16-bit activations differ from the reference's float ones by a rounding, a value near an
// FP8 boundary lands a whole FP8 step away, and that carries through the layer: measured on
// the small preset (the worst of 6 draws), this noise floor is about 0.033 at fp16 and 0.049
// at bf16 (largest error over out, dx and the gradients; tests/fp8/fp8_check_tolerance_test,
// which requires the tolerance at least 25% above it). It is a check for wiring (a wrong
// scale, layout or format is an error of order 1), not for FP8's precision - at bf16 it
// cannot even tell an FP8 layer from an unrounded one: the casts and FP8 GEMMs are checked
// bit-exactly or against the decoded FP8 product in tests/fp8/fp8_gpu_test.
double fp8_check_tolerance(DType dtype);
// The same in StepOps.tolerance's shape.
double fp8_step_tolerance(const LayerConfig *cfg, int which);

// What step 05's --fp8-attention adds to that tolerance. Its reference is unchanged (float
// attention on the unrounded Q, K, V), while the GPU's forward rounds Q, K, V and P to E4M3 and
// its 16-bit backward recomputes P from the FP8 forward's lse. tests/fp8/fp8_check_tolerance_test
// emulates that on the CPU (--check's configuration for the flag: the small preset with 2
// heads, no dropout) and requires this at least 25% above how far it moves the results.
#define FP8_ATTENTION_EXTRA_TOLERANCE 5e-2

// NULL if the FP8 GEMMs can run this layer, else why not (cuBLASLt's FP8 GEMMs need every
// dimension a multiple of 16).
const char *fp8_layer_unsupported(const LayerConfig *cfg);

#ifdef __cplusplus
}
#endif

#endif  // STEPS_DRIVER_FP8_STEP_H
