#include <string.h>

#include "steps/06_parallel_layers/step06.h"

// `--unfused` picks the variant without the weight fusions, `--fp8` the fused one in FP8.
int main(int argc, char **argv) {
    const StepOps *step = &STEP_06_PARALLEL_LAYERS;
    int out = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--unfused")) step = &STEP_06_PARALLEL_UNFUSED;
        else if (!strcmp(argv[i], "--fp8")) step = &STEP_06_PARALLEL_FP8;
        else argv[out++] = argv[i];
    }
    return step_main(out, argv, step);
}
