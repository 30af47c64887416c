// fp8_compute_scale: the reference solution of the exercise "fp8_scale".
#include <float.h>
#include <math.h>

#include "common/fp8/fp8_recipe.h"

float fp8_compute_scale(float amax, float fp8_max_value, int margin, float previous_scale) {
    if (!(amax > 0.0f) || !isfinite(amax)) return previous_scale;  // nothing seen, or garbage
    float scale = (fp8_max_value / amax) / ldexpf(1.0f, margin);
    return isfinite(scale) ? scale : FLT_MAX;  // a tiny amax: the largest float instead of inf
}
