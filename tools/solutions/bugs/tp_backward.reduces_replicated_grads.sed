# All-reduces the gradients of LN2's (replicated) weight and bias: tp times too large.
# In plain TP every rank already has them in full.
s|^\(    TP_REDUCE_TOKENS(ranks, tp, sp, d_ln1, d_ln1_loc, Tl \* h);.*\)$|\1\
    for (int id = P_LN2_WEIGHT; id <= P_LN2_BIAS; id++) TP_ALL_REDUCE(ranks, tp, g.tensor[id], h);|
