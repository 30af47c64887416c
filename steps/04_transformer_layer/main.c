#include "steps/04_transformer_layer/step04.h"

int main(int argc, char **argv) { return step_main(argc, argv, &STEP_04_TRANSFORMER_LAYER); }
