# All-reduces only T x h/tp floats of d_ln2, as if it were this rank's slice: it is a full [T, h]
# partial sum (LN2's output is replicated; every rank contributes to all of it).
s/TP_ALL_REDUCE(ranks, tp, d_ln2, T \* h);/TP_ALL_REDUCE(ranks, tp, d_ln2, T * hl);/
