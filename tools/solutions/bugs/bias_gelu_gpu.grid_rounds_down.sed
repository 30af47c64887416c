# Rounds the number of blocks down: the elements after the last full block are never written.
s|const unsigned blocks = (unsigned)((n + THREADS - 1) / THREADS);.*|const unsigned blocks = (unsigned)(n / THREADS);|
