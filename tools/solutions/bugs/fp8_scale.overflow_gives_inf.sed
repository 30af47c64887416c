# Returns inf when fp8_max / amax overflows, instead of the largest float.
s/return isfinite(scale) ? scale : FLT_MAX;.*/return scale;/
