// EXERCISE "fp8_cast_gpu" (GPU, chapter 05; graded by tests/exercises/fp8_cast_gpu_test.c:
// tools/grade.sh fp8_cast_gpu, on a machine with an NVIDIA GPU).
//
// Write the cast that delayed scaling runs on every FP8 tensor (chapter 05, "Delayed scaling";
// contract: exercises/gpu_exercises.h, ex_fp8_cast):
//   out[i] = FP8 code of x[i] * (*scale)    in `format`, rounded to nearest even, saturating
//   *amax  = max(*amax, max_i |x[i]|)        of x itself, not of x * scale
// The encoding is one call: __nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3 or __NV_E5M2)
// from <cuda_fp8.h> (you wrote it in C in the exercise fp8_encode). The lesson is the amax: a
// maximum over the whole tensor, computed by thousands of threads at once.
//
// A plan:
//   - a grid-stride loop: thread t of T takes elements t, t + T, t + 2T, ... keeping the max of
//     |x| it saw in a register (then a grid of a fixed size serves any n);
//   - combine a warp's 32 maxima with __shfl_xor_sync, then the block's warps through
//     __shared__ memory (and a __syncthreads);
//   - one thread per block folds the block's max into *amax with an atomic. There is no
//     atomicMax for float - but for floats >= 0 the order of the values is the order of their
//     bit patterns read as int: atomicMax((int *)amax, __float_as_int(m)).
// A cast whose out[] is right can still record a wrong amax: before you run the tests, check
// your kernel against the contract's second line word by word, and ask what happens when many
// blocks finish at once. The tests say which input showed a wrong amax.
//
// The test prints a speed line: your kernel's bandwidth against a device-to-device copy's, and
// the reference solution's.
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "exercises/gpu_exercises.h"

static __global__ void fp8_cast_kernel(const __half *x, uint8_t *out, int64_t n, const float *scale, float *amax,
                                       __nv_fp8_interpretation_t format) {
    // TODO: your code here.
}

extern "C" void ex_fp8_cast(const fp16_t *x, uint8_t *out, int64_t n, const float *scale, float *amax,
                            Fp8Format format) {
    // TODO: choose the grid and the block (this launch runs one thread).
    fp8_cast_kernel<<<1, 1>>>(x, out, n, scale, amax, format == FP8_E4M3 ? __NV_E4M3 : __NV_E5M2);
}
