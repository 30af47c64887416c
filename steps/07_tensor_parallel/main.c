// Step 07: the layer tensor-parallel over NCCL.
//
//   step07_tensor_parallel --tp 2 --check                 fork 2 ranks here, compare with the CPU
//   step07_tensor_parallel --tp 2 --parallel              step 06's parallel layer, cut 2 ways
//   step07_tensor_parallel --tp 2 --sequence-parallel     Megatron's sequence parallelism
//   NCCL_COMM_ID=node0:29500 mpirun -np 8 step07_tensor_parallel   one rank per process
#include "steps/07_tensor_parallel/step07.h"

int main(int argc, char **argv) {
    Options o;
    options_defaults(&o);
    options_parse(argc, argv, &o, &STEP_07_TENSOR_PARALLEL);
    return step07_run(&o);
}
