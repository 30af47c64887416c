# Reduces only T x h/tp floats of d_ln2, as if it were this rank's slice.
# It is a full [T, h] partial sum: LN2's output is replicated, every rank contributes to all of it.
s/TP_REDUCE_TOKENS(ranks, tp, sp, d_ln2, d_ln2_loc, Tl \* h);/TP_REDUCE_TOKENS(ranks, tp, sp, d_ln2, d_ln2_loc, Tl * hl);/
