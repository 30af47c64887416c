# Rounds halfway cases away from zero instead of to the even neighbour.
s/if (rest > half || (rest == half \&\& (q \& 1u))) q++;/if (rest >= half) q++;/
