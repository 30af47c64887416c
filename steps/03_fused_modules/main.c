#include "steps/03_fused_modules/step03.h"

int main(int argc, char **argv) { return step_main(argc, argv, &STEP_03_FUSED_MODULES); }
