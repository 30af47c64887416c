// The rates behind the time breakdown's floors, measured on the GPU at hand in the same run
// (common/core/breakdown.h turns them into per-category floors):
//   - GEMM: an 8192^3 cuBLASLt product in the layer's dtype (modules/gemm.h, no epilogue), and
//     in FP8 (E4M3 x E4M3, fast accumulation, modules/fp8_gemm.h) where the GPU has FP8;
//     random operands, because constant data lets the tensor cores draw less power and run
//     faster than they do on real data. The fastest of 3 runs of 10 products after a warm-up.
//   - attention: our flash attention forward and backward alone at the layer's shape, with its
//     dropout and mask (kernels/attention); the fastest of 5 after a warm-up. 0 (no floor) at a
//     head_dim the kernels do not support.
//   - copy bandwidth: cudaMemcpy device to device of 256 MiB, counted as bytes read + written
//     (the way the categories' bytes are counted); the fastest of 5 runs of 4 copies.
//   - all-reduce bandwidth: 0 - only step 07 communicates, and it is not measured here.
//   - at_power_limit: the GEMM, FP8 GEMM and attention rates again, each product run back to back
//     for 1 s and then timed over 1 s more, when the GPU's clocks have come down to what its
//     power limit allows (MeasuredRates' limit_ fields; about 2 s per rate, 6-8 s in all).
// About 0.2 s on an H100 without at_power_limit. Needs gpu_require() first.
#ifndef STEPS_DRIVER_FLOORS_H
#define STEPS_DRIVER_FLOORS_H

#include <stdio.h>

#include "common/core/breakdown.h"
#include "common/core/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

// fp8: also measure the FP8 GEMM rate (ignored on a GPU without FP8); at_power_limit: also the
// compute rates at the power limit (above).
MeasuredRates measure_rates(const LayerConfig *cfg, int fp8, int at_power_limit);

// One line per rate: "GEMM fp16 (cuBLASLt 8192^3): 745 TFLOP/s", ... ("not measured" for 0).
void print_rates(FILE *f, const LayerConfig *cfg, const MeasuredRates *r);

#ifdef __cplusplus
}
#endif

#endif  // STEPS_DRIVER_FLOORS_H
