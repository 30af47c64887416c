// fp8_encode: the reference solution of the exercise "fp8_encode".
#include <string.h>

#include "common/fp8/fp8_format.h"

uint8_t fp8_encode(float x, Fp8Format f) {
    const int mant_bits = f == FP8_E4M3 ? 3 : 2, bias = f == FP8_E4M3 ? 7 : 15;
    const int max_code = f == FP8_E4M3 ? 0x7e : 0x7b;  // the largest finite value
    uint32_t u;
    memcpy(&u, &x, 4);
    const uint8_t sign = (uint8_t)((u >> 24) & 0x80);
    const uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7f;  // NaN: all exponent and mantissa bits set
    if (a == 0x7f800000u) return sign | (uint8_t)max_code;  // infinity saturates
    const int e = (int)(a >> 23);
    if (e == 0) return sign;  // float subnormals are far below FP8's range: +-0
    // x = sig * 2^(e - 127 - 23) with sig the 24-bit significand (implicit bit included).
    const uint32_t sig = (a & 0x7fffffu) | 0x800000u;
    const int E = e - 127 + bias;  // the FP8 exponent field, if x is normal in FP8
    // Drop the bits FP8 cannot keep: 23 - mant_bits for a normal, more for a subnormal
    // (whose exponent field is 0, i.e. the exponent of the smallest normal).
    int shift = 23 - mant_bits + (E >= 1 ? 0 : 1 - E);
    if (shift > 25) return sign;  // below half the smallest subnormal: rounds to zero
    uint32_t q = sig >> shift, rest = sig & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rest > half || (rest == half && (q & 1u))) q++;  // round to nearest, ties to even
    // A normal's q holds the implicit bit; a carry out of the mantissa (q = 2^(mant_bits+1))
    // lands in the exponent by itself, and so does a subnormal rounding up to the smallest normal.
    int code = E >= 1 ? (E << mant_bits) + (int)q - (1 << mant_bits) : (int)q;
    if (code > max_code) code = max_code;  // saturate
    return sign | (uint8_t)code;
}
