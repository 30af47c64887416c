# Does not rescale what was accumulated when the running maximum grows.
s/double rescale = exp(st->max - new_max);.*/double rescale = 1.0;/
