# Divides by an amax of 0 (nothing seen yet) instead of keeping the previous scale.
s/if (!(amax > 0.0f) || !isfinite(amax)) return previous_scale;/if (!isfinite(amax)) return previous_scale;/
