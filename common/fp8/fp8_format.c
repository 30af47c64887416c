// fp8_decode and the format's parameters. fp8_encode is the graded exercise "fp8_encode"
// (docs/exercises.md).
#include "common/fp8/fp8_format.h"

#include <math.h>

const char *fp8_format_name(Fp8Format f) { return f == FP8_E4M3 ? "E4M3" : "E5M2"; }

float fp8_max(Fp8Format f) { return f == FP8_E4M3 ? 448.0f : 57344.0f; }

float fp8_decode(uint8_t code, Fp8Format f) {
    const int mant_bits = f == FP8_E4M3 ? 3 : 2, bias = f == FP8_E4M3 ? 7 : 15;
    const int exp_max = f == FP8_E4M3 ? 15 : 31;
    float sign = (code & 0x80) ? -1.0f : 1.0f;
    int exponent = (code & 0x7f) >> mant_bits, mantissa = code & ((1 << mant_bits) - 1);
    if (f == FP8_E4M3 && exponent == exp_max && mantissa == (1 << mant_bits) - 1) return NAN;
    if (f == FP8_E5M2 && exponent == exp_max) return mantissa ? NAN : sign * INFINITY;
    if (exponent == 0)  // subnormal: 0.mmm x 2^(1 - bias)
        return sign * ldexpf((float)mantissa, 1 - bias - mant_bits);
    return sign * ldexpf((float)((1 << mant_bits) + mantissa), exponent - bias - mant_bits);
}
