# Returns +0 for -0.0 (and for float subnormals of either sign).
s/if (e == 0) return sign;/if (e == 0) return 0;/
