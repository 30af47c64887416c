# Does not rescale l and acc when the running maximum grows: earlier tiles keep weights
# relative to an old maximum.
/^        l \*= rescale;$/d
/^        for (int t = 0; t < HEAD_DIM_MAX; t++) acc\[t\] \*= rescale;$/d
