# Starts the shuffle reduction at offset 8: each half of the warp sums only its own 16 lanes.
s|for (int offset = 16; offset > 0; offset /= 2)|for (int offset = 8; offset > 0; offset /= 2)|
