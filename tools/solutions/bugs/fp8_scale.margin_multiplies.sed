# Multiplies by 2^margin instead of dividing: the margin must leave headroom, not remove it.
s|(fp8_max_value / amax) / ldexpf(1.0f, margin)|(fp8_max_value / amax) * ldexpf(1.0f, margin)|
