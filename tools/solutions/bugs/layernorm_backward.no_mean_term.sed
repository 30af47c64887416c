# Forgets that the mean depends on x: dx loses its -mean(g) term.
s/(g - mean_g - xhat \* mean_g_xhat)/(g - xhat * mean_g_xhat)/
