# Lets the zero rows past seq in the last key tile take part: their score is 0, not -inf.
s/s\[jj\] = j >= seq || (causal \&\& j > i) ? -INFINITY : dot;/s[jj] = causal \&\& j > i ? -INFINITY : dot;/
