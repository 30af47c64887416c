// EXERCISE "fp8_encode" (CPU, chapter 05; graded by tests/fp8/fp8_format_test.c:
// tools/grade.sh fp8_encode).
//
// Encode a float as FP8 (common/fp8/fp8_format.h explains both formats):
//   E4M3: sign, 4 exponent bits (bias 7), 3 mantissa bits; largest 448 (0x7e); NaN 0x7f
//   E5M2: sign, 5 exponent bits (bias 15), 2 mantissa bits; largest 57344 (0x7b)
// Rules (those of CUDA's __nv_cvt_float_to_fp8 with __NV_SATFINITE):
//   - round to nearest, ties to even (also into the subnormals, exponent field 0);
//   - finite values too large for the format, and infinities, become +-largest;
//   - NaN becomes sign | 0x7f (a NaN in both formats: exponent and mantissa bits all ones);
//   - the sign is kept, also on zero.
// Hint: take the float's bits; its 24-bit significand (with the implicit 1) times a power of
// two is the value; shift away the bits FP8 has no room for and round what you dropped.
#include <string.h>

#include "common/fp8/fp8_format.h"

uint8_t fp8_encode(float x, Fp8Format f) {
    (void)x, (void)f;
    return 0;  // TODO: your code here
}
