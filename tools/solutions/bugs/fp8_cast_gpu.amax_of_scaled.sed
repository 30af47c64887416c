# Records the amax of x * scale instead of x: delayed scaling divides by the scale it already applied.
s|local_max = fmaxf(local_max, fabsf(v));.*|local_max = fmaxf(local_max, fabsf(v * s));|
