# Forgets GELU's factor 0.5.
s|return 0.5f \* z \* (1.0f + tanhf|return z * (1.0f + tanhf|
