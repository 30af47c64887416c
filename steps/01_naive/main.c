#include "steps/01_naive/step01.h"

int main(int argc, char **argv) { return step_main(argc, argv, &STEP_01_NAIVE); }
