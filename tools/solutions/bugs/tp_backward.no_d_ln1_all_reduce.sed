# Forgets the all-reduce at LN1's output: QKV is column-parallel too, so its dx is partial.
/TP_ALL_REDUCE(ranks, tp, d_ln1, T \* h);/d
