# Takes a row as 64 bytes (32 fp16 values) instead of 128.
s/(uint32_t)row \* 128u/(uint32_t)row * 64u/
