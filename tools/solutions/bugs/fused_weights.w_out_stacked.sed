# Stacks W_proj and W_fc2 as whole matrices (as for W_in) instead of putting their columns side
# by side: each row of W_out must hold proj's h inputs, then fc2's ffn.
s|memcpy(f->w_out + o \* k_out, w\[P_PROJ_WEIGHT\]|memcpy(f->w_out + o * h, w[P_PROJ_WEIGHT]|
s|memcpy(f->w_out + o \* k_out + h, w\[P_FC2_WEIGHT\]|memcpy(f->w_out + h * h + o * ffn, w[P_FC2_WEIGHT]|
