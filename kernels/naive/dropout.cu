#include "kernels/naive/dropout.h"

#include "common/core/philox.h"
#include "common/gpu/gpu_phase.h"
#include "kernels/device_utils.cuh"

// One thread per group of 16 consecutive elements: a single Philox call gives the 16 random
// bytes of the group (common/core/philox.h). The thread moves its 16 elements as two 16-byte
// loads and stores: one element at a time, a warp's accesses would be 32 bytes apart and
// the kernel (run on attention's [s x s] probabilities) several times slower.
template <typename T>
__global__ void dropout_kernel(const T *x, int64_t n, float p, uint64_t seed, uint64_t offset, T *y,
                               bool aligned) {
    const int64_t groups = (n + 15) / 16;
    const float scale = dropout_keep_scale(p);
    const uint32_t threshold = dropout_threshold(p);
    for (int64_t g = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; g < groups; g += (int64_t)gridDim.x * blockDim.x) {
        const Philox4 r = dropout_random_bytes(seed, offset, (uint64_t)g * 16);
        const int64_t i0 = g * 16;
        if (aligned && i0 + 16 <= n) {  // a whole group of 16-byte aligned tensors
#pragma unroll
            for (int half = 0; half < 2; half++) {
                Pack8<T> v = *reinterpret_cast<const Pack8<T> *>(x + i0 + 8 * half);
#pragma unroll
                for (int k = 0; k < 8; k++)
                    v.v[k] = from_float<T>(dropout_byte(r, 8 * half + k) >= threshold ? to_float(v.v[k]) * scale : 0.0f);
                *reinterpret_cast<Pack8<T> *>(y + i0 + 8 * half) = v;
            }
        } else {  // the last, partial group (or tensors not 16-byte aligned)
            for (int k = 0; k < 16 && i0 + k < n; k++)
                y[i0 + k] = from_float<T>(dropout_byte(r, k) >= threshold ? to_float(x[i0 + k]) * scale : 0.0f);
        }
    }
}

extern "C" void dropout_forward(const void *x, int64_t n, float p, uint64_t seed, uint64_t offset,
                                void *y, DType dtype) {
    if (n <= 0) return;
    if (p == 0.0f) {  // nothing dropped, nothing scaled: skip the random numbers
        if (x != y) GPU_PHASE(CAT_ELEMENTWISE, CUDA_CHECK(cudaMemcpy(y, x, (size_t)n * 2, cudaMemcpyDeviceToDevice)));
        return;
    }
    const bool aligned = ((uintptr_t)x | (uintptr_t)y) % 16 == 0;
    int64_t blocks = ((n + 15) / 16 + 255) / 256;
    if (blocks > 65536) blocks = 65536;
    gpu_phase(CAT_ELEMENTWISE);
    DISPATCH_DTYPE(dtype, T,
                   dropout_kernel<T><<<(unsigned)blocks, 256>>>((const T *)x, n, p, seed, offset, (T *)y, aligned));
    CHECK_LAUNCH();
    gpu_phase_end();
}

// Attention's probabilities, [rows = batch * heads * seq, seq]: row r = bh * seq + i. They are
// keyed by attention's numbering (common/core/philox.h), in which the 16 keys 64 kb + 8n + 2c + e
// (n = 0..7, e = 0, 1) of a row form Philox group (r * key_blocks + kb) * 4 + c: one thread
// per group, so thread g draws group g. Its keys come in pairs 8 apart, and c is the fastest
// index, so four consecutive threads cover 8 consecutive keys: with an even seq each pair is
// one 4-byte access and a warp's accesses of one n fall into eight 16-byte pieces.
template <typename T>
__global__ void attention_dropout_kernel(const T *x, int64_t rows, int seq, float p, uint64_t seed, uint64_t offset,
                                         T *y) {
    const int64_t key_blocks = (int64_t)attention_key_blocks(seq), groups = rows * key_blocks * 4;
    const float scale = dropout_keep_scale(p);
    const uint32_t threshold = dropout_threshold(p);
    for (int64_t g = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; g < groups; g += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = g / 4 / key_blocks;
        const int first_key = (int)(g / 4 % key_blocks) * 64 + 2 * (int)(g % 4);
        const Philox4 bytes = philox4x32_10((uint64_t)g, offset, seed);
        for (int n = 0; n < 8; n++) {
            const int j = first_key + 8 * n;  // keys j and j + 1 use bytes 2n and 2n + 1
            if (j >= seq) break;
            const int64_t at = r * seq + j;
            const bool keep0 = dropout_byte(bytes, 2 * n) >= threshold;
            const bool keep1 = dropout_byte(bytes, 2 * n + 1) >= threshold;
            if (seq % 2 == 0) {  // j even, r * seq even: the pair is 4-byte aligned, and j + 1 < seq
                uint32_t pair = *reinterpret_cast<const uint32_t *>(x + at);
                T v[2];
                memcpy(v, &pair, sizeof pair);
                v[0] = from_float<T>(keep0 ? to_float(v[0]) * scale : 0.0f);
                v[1] = from_float<T>(keep1 ? to_float(v[1]) * scale : 0.0f);
                memcpy(&pair, v, sizeof pair);
                *reinterpret_cast<uint32_t *>(y + at) = pair;
            } else {
                y[at] = from_float<T>(keep0 ? to_float(x[at]) * scale : 0.0f);
                if (j + 1 < seq) y[at + 1] = from_float<T>(keep1 ? to_float(x[at + 1]) * scale : 0.0f);
            }
        }
    }
}

extern "C" void attention_dropout_forward(const void *probs, int64_t rows, int seq, float p, uint64_t seed,
                                          uint64_t offset, void *y, DType dtype) {
    if (rows <= 0 || seq <= 0) return;
    if (p == 0.0f) {
        if (probs != y) GPU_PHASE(CAT_ELEMENTWISE, CUDA_CHECK(cudaMemcpy(y, probs, (size_t)rows * seq * 2, cudaMemcpyDeviceToDevice)));
        return;
    }
    int64_t blocks = (rows * (int64_t)attention_key_blocks(seq) * 4 + 255) / 256;
    if (blocks > 65536) blocks = 65536;
    gpu_phase(CAT_ELEMENTWISE);
    DISPATCH_DTYPE(dtype, T,
                   attention_dropout_kernel<T><<<(unsigned)blocks, 256>>>((const T *)probs, rows, seq, p, seed, offset,
                                                                          (T *)y));
    CHECK_LAUNCH();
    gpu_phase_end();
}

extern "C" void attention_dropout_backward(const void *dy, int64_t rows, int seq, float p, uint64_t seed,
                                           uint64_t offset, void *dx, DType dtype) {
    attention_dropout_forward(dy, rows, seq, p, seed, offset, dx, dtype);
}

extern "C" void dropout_backward(const void *dy, int64_t n, float p, uint64_t seed, uint64_t offset,
                                 void *dx, DType dtype) {
    dropout_forward(dy, n, p, seed, offset, dx, dtype);
}
