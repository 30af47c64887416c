// The work of cuBLASLt's bias epilogues as separate, memory-bound kernels: what a Linear runs
// after a plain GEMM when an epilogue is placed outside it (modules/linear.h,
// EPILOGUE_<KIND>=kernel). Each is one pass over the [rows, cols] tensor, as close to copy
// bandwidth as we can get it, so that "plain GEMM + kernel" can be timed against "GEMM with
// the epilogue" (//modules:epilogue_bench).
//
// All tensors are row-major [rows, cols] in `dtype` (fp16 or bf16), bias and dbias [cols];
// every value is computed in fp32. Any rows >= 0 and cols >= 1; 16-byte accesses (8 values)
// when cols % 8 == 0 and the pointers are 16-byte aligned, one value per access otherwise.
// The names differ from step 01's bias_add/bias_grad (kernels/naive/bias.h), which both can
// be linked beside.
#ifndef KERNELS_FUSED_BIAS_EPILOGUE_H
#define KERNELS_FUSED_BIAS_EPILOGUE_H

#include <stddef.h>
#include <stdint.h>

#include "common/core/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

// y[r, c] += bias[c], in place (the BIAS epilogue: y is the GEMM's output, already with any
// residual the GEMM added).
void bias_add_rows(void *y, const void *bias, int64_t rows, int cols, DType dtype);

// The GELU_AUX_BIAS epilogue: pre[r, c] += bias[c] (in place: the pre-activation the backward
// reads) and out[r, c] = GELU(pre[r, c] + bias[c]), GELU tanh of the fp32 sum before it is
// rounded (as the epilogue does). out must not overlap pre.
void bias_gelu_forward(void *pre, const void *bias, void *out, int64_t rows, int cols, DType dtype);

// The bias gradient (the BGRADB epilogue): dbias[c] = sum over r of dy[r, c], fp32 sums,
// rounded to dtype once. Two passes: blocks sum fixed chunks of rows into
// workspace (fp32 partial sums), then one thread per column adds its chunks in order - no
// atomics, so the bits depend only on the shape (as --deterministic wants). workspace:
// bias_grad_workspace_bytes(cols) bytes of device memory, 256-byte aligned.
void bias_grad_columns(const void *dy, int64_t rows, int cols, void *dbias, void *workspace, DType dtype);
// The same on `stream` (a cudaStream_t; NULL: the default stream, i.e. bias_grad_columns), for
// a weight gradient that runs on a stream of its own (modules/linear.h, linear_wgrad_on). The
// workspace must not be in use by work on another stream meanwhile.
struct CUstream_st;  // what a cudaStream_t points to (driver_types.h), so that no CUDA header is needed here
void bias_grad_columns_on(const void *dy, int64_t rows, int cols, void *dbias, void *workspace, DType dtype,
                          struct CUstream_st *stream);
size_t bias_grad_workspace_bytes(int cols);

#ifdef __cplusplus
}
#endif

#endif  // KERNELS_FUSED_BIAS_EPILOGUE_H
