#include "steps/02_te_modules/step02.h"

int main(int argc, char **argv) { return step_main(argc, argv, &STEP_02_TE_MODULES); }
