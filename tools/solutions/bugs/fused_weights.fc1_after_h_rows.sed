# Puts fc1's rows after h rows instead of after qkv's 3h.
s/memcpy(f->w_in + 3 \* h \* h, w\[P_FC1_WEIGHT\]/memcpy(f->w_in + h * h, w[P_FC1_WEIGHT]/
s/memcpy(f->b_in + 3 \* h, w\[P_FC1_BIAS\]/memcpy(f->b_in + h, w[P_FC1_BIAS]/
