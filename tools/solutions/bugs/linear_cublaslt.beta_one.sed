# beta = 1: cuBLASLt reads C (here y's old contents) and adds it.
s/const float alpha = 1.0f, beta = 0.0f;/const float alpha = 1.0f, beta = 1.0f;/
