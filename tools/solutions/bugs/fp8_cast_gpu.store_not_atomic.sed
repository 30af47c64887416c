# Stores each block's max into *amax instead of folding it in with an atomic max: the last
# block to write wins.
s|if (lane == 0) atomicMax(reinterpret_cast<int \*>(amax), __float_as_int(block_max));|if (lane == 0) *amax = block_max;|
