#include "steps/05_fp8/step05.h"

int main(int argc, char **argv) { return step_main(argc, argv, &STEP_05_FP8); }
