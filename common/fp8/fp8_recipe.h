// Delayed scaling, as Transformer Engine's DelayedScaling recipe.
//
// To use FP8's few bits well, each tensor is multiplied by a scale before the cast so that
// its largest magnitude (amax) lands near the format's largest value. Computing amax first
// would cost an extra pass over the tensor, so "delayed" scaling uses the amaxes seen in
// PAST steps instead: each FP8 tensor keeps a short history of its amax, the cast of this
// step records this step's amax into the history's newest slot, and after the step the
// scale for the next one is computed from the history.
//
//   format         HYBRID: E4M3 for forward tensors (activations, weights), E5M2 for
//                  gradients (they need range more than precision); or E4M3 everywhere
//   margin         scale = (fp8_max / amax) / 2^margin: headroom for growth
//   history_len    how many steps of amax are remembered (the quickstart uses 16)
//   amax_algo      MAX: the largest amax in the history; MOST_RECENT: the newest one
#ifndef COMMON_FP8_FP8_RECIPE_H
#define COMMON_FP8_FP8_RECIPE_H

#include "common/fp8/fp8_format.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { FP8_RECIPE_HYBRID = 0, FP8_RECIPE_E4M3 = 1 } Fp8RecipeFormat;
typedef enum { AMAX_ALGO_MAX = 0, AMAX_ALGO_MOST_RECENT = 1 } AmaxAlgo;

typedef struct {
    Fp8RecipeFormat format;
    int margin;
    int history_len;
    AmaxAlgo amax_algo;
} DelayedScaling;

// HYBRID, margin 0, history 16, MAX: the quickstart's recipe.
DelayedScaling delayed_scaling_default(void);

// The scaling state of one FP8 tensor.
typedef struct {
    Fp8Format format;
    float scale, scale_inv;
    int history_len;
    float *amax_history;  // [history_len]; slot 0 is the newest (this step's)
} Fp8Meta;

// is_gradient selects E5M2 under HYBRID. Starts with scale 1 and an all-zero history.
void fp8_meta_init(Fp8Meta *m, const DelayedScaling *recipe, int is_gradient);
void fp8_meta_free(Fp8Meta *m);
// Folds an amax observed during this step into the newest slot (keeps the larger).
void fp8_meta_record_amax(Fp8Meta *m, float amax);

// After a step: picks amax from the history (its maximum, or its newest entry), sets
//   scale = (fp8_max / amax) / 2^margin   (FLT_MAX if that overflows),
// keeping the previous scale when amax is 0 or not finite; scale_inv = 1 / scale. Then the
// history rolls by one (every entry one slot older, the oldest dropped) and the newest
// slot starts the next step at zero.
void fp8_update_scale(Fp8Meta *m, const DelayedScaling *recipe);

// The rule on its own: the new scale from an amax and the previous scale.
float fp8_compute_scale(float amax, float fp8_max_value, int margin, float previous_scale);

#ifdef __cplusplus
}
#endif

#endif  // COMMON_FP8_FP8_RECIPE_H
