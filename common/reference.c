// PLACEHOLDER: being written (the CPU reference).
#include "common/reference.h"
#include "common/check.h"
void ref_layer_train_step(const LayerConfig *cfg, const LayerParams *params,
                          const LayerInputs *in, uint64_t step, LayerResults *res) {
    (void)cfg; (void)params; (void)in; (void)step; (void)res;
    DIE("reference not written yet");
}
