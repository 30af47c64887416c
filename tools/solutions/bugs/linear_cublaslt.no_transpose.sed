# Does not transpose A: W stored column-major is [in, out], and D needs op(A) = [out, in].
s/const cublasOperation_t transpose = CUBLAS_OP_T;/const cublasOperation_t transpose = CUBLAS_OP_N;/
