# Rounds the number of blocks down: the rows of the last, partial block are never written.
s|const int blocks = (rows + WARPS_PER_BLOCK - 1) / WARPS_PER_BLOCK;.*|const int blocks = rows / WARPS_PER_BLOCK;|
