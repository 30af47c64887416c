# All-reduces the gradients of the replicated LayerNorm parameters: every rank already has them
# in full, so the sum is tp times too large.
s|^\(    TP_ALL_REDUCE(ranks, tp, d_ln1, T \* h);\)|\1\
    for (int id = P_LN2_WEIGHT; id <= P_LN2_BIAS; id++) {\
        float *bufs[TP_MAX_RANKS] = {0};\
        for (int r = 0; r < tp; r++) bufs[r] = ranks[r].g.tensor[id];\
        tp_sim_all_reduce(bufs, tp, h);\
    }|
