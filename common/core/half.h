// fp16 and bf16 on the host, in plain C: a 16-bit pattern in a uint16_t.
//
// Host code never computes in half precision; it only converts, to upload inputs and
// parameters in the GPU's storage type and to read results back as float. Both
// conversions to 16 bits round to nearest even, like __float2half_rn / __float2bfloat16_rn.
#ifndef COMMON_CORE_HALF_H
#define COMMON_CORE_HALF_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

uint16_t float_to_fp16(float f);
float fp16_to_float(uint16_t h);
uint16_t float_to_bf16(float f);
float bf16_to_float(uint16_t b);

#ifdef __cplusplus
}
#endif

#endif  // COMMON_CORE_HALF_H
