// FP8 in plain C: the two 8-bit float formats of Hopper's tensor cores.
//
//   E4M3  s.eeee.mmm   bias 7, largest 448, smallest subnormal 2^-9, no infinities;
//                      S.1111.111 is NaN. For values: activations and weights.
//   E5M2  s.eeeee.mm   bias 15, largest 57344, smallest subnormal 2^-16, IEEE-like
//                      infinities (S.11111.00) and NaNs. More range, less precision: gradients.
//
// An FP8 tensor is 8-bit data plus a float scale: data = fp8(x * scale), x ~ data / scale.
//
// Encoding rounds to nearest, ties to even, and saturates: finite values beyond the largest
// (and infinities) become +-largest - what CUDA's __nv_cvt_float_to_fp8(x, __NV_SATFINITE, ..)
// does on the GPU, bit for bit (tests/fp8 checks that on the H100). NaN becomes sign | 0x7f,
// a NaN in both formats (the H100's conversion gives 0x7f for a float NaN in E5M2 too).
#ifndef COMMON_FP8_FP8_FORMAT_H
#define COMMON_FP8_FP8_FORMAT_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { FP8_E4M3 = 0, FP8_E5M2 = 1 } Fp8Format;

const char *fp8_format_name(Fp8Format f);  // "E4M3" or "E5M2"
float fp8_max(Fp8Format f);                // 448 or 57344
uint8_t fp8_encode(float x, Fp8Format f);
float fp8_decode(uint8_t code, Fp8Format f);

#ifdef __cplusplus
}
#endif

#endif  // COMMON_FP8_FP8_FORMAT_H
