// GPU helpers for the graded GPU exercises' tests: outputs that start as NaN, errors reported
// by name instead of a crash, fp16 transfers, and the speed line
//
//   speed: your kernel 52.1 us, 88% of copy bandwidth; the reference solution 61.0 us, 75%
//
// timed with CUDA events in the same run as the yardstick (a device-to-device copy of as many
// bytes, or cuBLAS's GEMM), so that it means the same on any GPU.
#ifndef TESTS_EXERCISES_GPU_GRADING_H
#define TESTS_EXERCISES_GPU_GRADING_H

#include <stddef.h>
#include <stdint.h>

// cudaMalloc'd, every byte 0xff: NaN in fp16 and float, NaN in both FP8 formats. Fails the
// test case (with the CUDA error) if the allocation fails.
void *gpu_alloc_poisoned(size_t bytes);
void gpu_free(void *p);

// Waits for the GPU and fails the test case, naming `what`, if a launch or a kernel failed
// (an illegal address, a bad launch configuration, ...). Call it right after the code under test.
void gpu_expect_no_error(const char *what);

// float host data <-> fp16 device buffers (round to nearest even); uploads allocate.
void *gpu_upload_fp16(const float *host, int64_t n);
void gpu_download_fp16(float *host, const void *dev, int64_t n);
void *gpu_upload_f32(const float *host, int64_t n);
void gpu_download_f32(float *host, const void *dev, int64_t n);
void gpu_download_bytes(void *host, const void *dev, size_t bytes);

// Median time of one call of op(ctx), in microseconds (CUDA events; warm-up calls first).
typedef void (*GpuOp)(void *ctx);
double gpu_time_us(GpuOp op, void *ctx);

// A device-to-device copy's bandwidth (bytes read + written per second) for `bytes` bytes.
double gpu_copy_bytes_per_s(size_t bytes);

// cuBLAS's fp16 GEMM rate (FLOP/s, fp32 accumulation) for C [m, n] = A [m, k] B [k, n].
double gpu_gemm_flops_per_s(int m, int n, int k);

// Prints the speed line: "<what> X us, Y% of <yardstick>; the reference solution Z us, W%".
void print_speed_line(const char *what, double yours_us, double reference_us, double work,
                      double yardstick_rate, const char *yardstick);

#endif  // TESTS_EXERCISES_GPU_GRADING_H
