#include <string.h>

#include "steps/06_parallel_layers/step06.h"

// `--unfused` picks the variant without the weight fusions.
int main(int argc, char **argv) {
    const StepOps *step = &STEP_06_PARALLEL_LAYERS;
    int out = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--unfused")) step = &STEP_06_PARALLEL_UNFUSED;
        else argv[out++] = argv[i];
    }
    return step_main(out, argv, step);
}
