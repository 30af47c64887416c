#include <string.h>

#include "common/core/errors.h"
#include "steps/06_parallel_layers/step06.h"

// `--unfused` picks the variant without the weight fusions, `--fp8` the fused one in FP8. The
// two exclude each other: there is no unfused FP8 variant, and running one of them while the
// other was asked for would be a silent lie.
int main(int argc, char **argv) {
    const StepOps *step = &STEP_06_PARALLEL_LAYERS;
    int fp8 = 0, unfused = 0, out = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--unfused")) unfused = 1;
        else if (!strcmp(argv[i], "--fp8")) fp8 = 1;
        else argv[out++] = argv[i];
    }
    if (fp8 && unfused)
        fail_user("--fp8 and --unfused cannot be combined: the FP8 variant is the fused layer (its two fused "
                  "GEMMs in FP8); give one of them");
    if (unfused) step = &STEP_06_PARALLEL_UNFUSED;
    if (fp8) step = &STEP_06_PARALLEL_FP8;
    return step_main(out, argv, step);
}
