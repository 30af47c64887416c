# Encodes infinity as NaN instead of saturating it to the largest finite value.
s/if (a == 0x7f800000u) return sign | (uint8_t)max_code;/if (a == 0x7f800000u) return sign | 0x7f;/
