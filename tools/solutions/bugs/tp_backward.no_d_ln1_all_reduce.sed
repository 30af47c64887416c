# Forgets the all-reduce at LN1's output (QKV is column-parallel too, so its dx is partial).
# Each rank goes on with its own partial sum.
s/TP_REDUCE_TOKENS(ranks, tp, sp, d_ln1, d_ln1_loc, Tl \* h);.*/for (int r = 0; r < tp; r++) memcpy(ranks[r].d_ln1_loc, ranks[r].d_ln1 + (sp ? r * Tl * h : 0), (size_t)(Tl * h) * sizeof(float));/
s/#include <stdint.h>/#include <stdint.h>\
#include <string.h>/
