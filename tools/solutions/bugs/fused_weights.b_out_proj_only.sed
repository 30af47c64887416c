# Takes b_out = b_proj: one GEMM sums both branches, so both biases belong in it.
s/f->b_out\[o\] = w\[P_PROJ_BIAS\]\[o\] + w\[P_FC2_BIAS\]\[o\];/f->b_out[o] = w[P_PROJ_BIAS][o];/
