# Forgets that rstd depends on x: dx loses its -xhat * mean(g * xhat) term.
s/(g - mean_g - xhat \* mean_g_xhat)/(g - mean_g)/
