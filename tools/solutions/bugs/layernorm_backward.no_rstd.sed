# Forgets the outer factor rstd in dx.
s/(float)(rstd\[r\] \* (g - mean_g - xhat \* mean_g_xhat))/(float)(g - mean_g - xhat * mean_g_xhat)/
