# Rotates instead of XOR: conflict-free and a permutation, but not the hardware's pattern.
s/(chunk ^ (row % 8))/((chunk + row) % 8)/
