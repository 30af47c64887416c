# Takes the max of x instead of |x|: a tensor whose largest magnitude is negative gets a small amax.
s|local_max = fmaxf(local_max, fabsf(v));.*|local_max = fmaxf(local_max, v);|
