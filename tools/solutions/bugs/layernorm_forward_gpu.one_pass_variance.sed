# The variance as E[x^2] - mean^2: right on paper, lost to rounding in fp32 when |mean| >> spread.
s|const float d = __half2float(xr\[c\]) - mu;|const float d = __half2float(xr[c]);|
s|const float rs = rsqrtf(warp_sum(squares) / cols + eps);|const float rs = rsqrtf(warp_sum(squares) / cols - mu * mu + eps);|
