# Indexes the bias by the row (i / cols) instead of the column (i % cols).
s|__half2float(bias\[i % cols\])|__half2float(bias[i / cols])|
