# Masks key j = i too: with the causal mask a query sees itself.
s/(causal \&\& j > i)/(causal \&\& j >= i)/
