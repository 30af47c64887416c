# Rescales the running sum but not the output accumulator when the running maximum grows.
/st->acc\[t\] \*= rescale;/d
