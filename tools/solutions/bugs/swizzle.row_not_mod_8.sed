# XORs with the whole row number: rows 8 and beyond leave their own 128 bytes.
s/(chunk ^ (row % 8))/(chunk ^ row)/
