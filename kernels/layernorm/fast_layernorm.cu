#include <stdio.h>

#include "common/gpu/gpu.h"
#include "common/gpu/gpu_phase.h"
#include "kernels/device_utils.cuh"
#include "kernels/fp8_device.cuh"
#include "kernels/layernorm/fast_layernorm.h"

// Forward: 4 warps per row, one row per block. Backward: 8 warps per row, so that each
// thread keeps fewer values in registers (it holds x, dy and its dgamma/dbeta sums) and
// more warps per multiprocessor have loads in flight.
static const int THREADS = 128;
static const int BWD_THREADS = 256;

// Sums of two values over the block; every thread gets both. One barrier per call: the
// warps' partial sums alternate between two shared arrays (`parity`), so a call never
// overwrites what a slower warp may still be reading from the previous call.
template <int BLOCK>
__device__ __forceinline__ float2 block_sum2(float a, float b, int parity = 0) {
    constexpr int WARPS = BLOCK / 32;
    __shared__ float2 partial[2][WARPS];
    a = warp_sum(a);
    b = warp_sum(b);
    if (threadIdx.x % 32 == 0) partial[parity][threadIdx.x / 32] = make_float2(a, b);
    __syncthreads();
    float2 s = make_float2(0.0f, 0.0f);
#pragma unroll
    for (int w = 0; w < WARPS; w++) s.x += partial[parity][w].x, s.y += partial[parity][w].y;
    return s;
}

// Thread t owns the packs t, t + BLOCK, t + 2 BLOCK, ... of its row: VPT of them.
template <typename T, int VPT, int BLOCK>
__device__ __forceinline__ void load_row(const T *row, int cols, float (&v)[VPT][8]) {
#pragma unroll
    for (int i = 0; i < VPT; i++) {
        int c = (threadIdx.x + i * BLOCK) * 8;
        if (c < cols) {
            Pack8<T> p = *reinterpret_cast<const Pack8<T> *>(row + c);
#pragma unroll
            for (int j = 0; j < 8; j++) v[i][j] = to_float(p.v[j]);
        } else {
#pragma unroll
            for (int j = 0; j < 8; j++) v[i][j] = 0.0f;
        }
    }
}

// Where the normalised rows go: y in the input's dtype, or (FP8 = true, step 05) FP8 codes of
// y * scale in y8, with max |y| folded into *amax - the cast the next FP8 GEMM needs, done
// while the row is still in registers instead of in a pass over a 16-bit copy.
struct Fp8Out {
    uint8_t *y8;
    const float *scale;
    float *amax;
    Fp8Format format;
};

template <typename T, int VPT, bool FP8 = false>
__global__ void __launch_bounds__(THREADS) layernorm_forward_kernel(
    const T *x, const T *gamma, const T *beta, T *y, float *mean_out, float *rstd_out, int cols, float eps,
    Fp8Out fp8 = Fp8Out{}) {
    const int64_t row = blockIdx.x;
    float v[VPT][8];
    load_row<T, VPT, THREADS>(x + row * cols, cols, v);
    float sum = 0.0f;
#pragma unroll
    for (int i = 0; i < VPT; i++)
#pragma unroll
        for (int j = 0; j < 8; j++) sum += v[i][j];
    const float mean = block_sum2<THREADS>(sum, 0.0f, 0).x / cols;
    // Second pass over registers, not memory: the variance of (x - mean) is exact-er than
    // E[x^2] - mean^2 and costs no extra bytes.
    float sq = 0.0f;
#pragma unroll
    for (int i = 0; i < VPT; i++) {
        int c = (threadIdx.x + i * THREADS) * 8;
        if (c < cols)
#pragma unroll
            for (int j = 0; j < 8; j++) sq += (v[i][j] - mean) * (v[i][j] - mean);
    }
    const float rstd = rsqrtf(block_sum2<THREADS>(sq, 0.0f, 1).x / cols + eps);
    const float fp8_scale = FP8 ? *fp8.scale : 1.0f;
    float amax = 0.0f;
#pragma unroll
    for (int i = 0; i < VPT; i++) {
        int c = (threadIdx.x + i * THREADS) * 8;
        if (c >= cols) continue;
        Pack8<T> g = *reinterpret_cast<const Pack8<T> *>(gamma + c);
        Pack8<T> b = *reinterpret_cast<const Pack8<T> *>(beta + c);
        float out[8];
#pragma unroll
        for (int j = 0; j < 8; j++) out[j] = (v[i][j] - mean) * rstd * to_float(g.v[j]) + to_float(b.v[j]);
        if (FP8) {
            uint32_t code[8];
#pragma unroll
            for (int j = 0; j < 8; j++) {
                amax = fmaxf(amax, fabsf(out[j]));
                code[j] = to_fp8(out[j] * fp8_scale, fp8.format);
            }
            *reinterpret_cast<uint2 *>(fp8.y8 + row * cols + c) =
                make_uint2(pack_fp8x4(code), pack_fp8x4(code + 4));
        } else {
            Pack8<T> packed;
#pragma unroll
            for (int j = 0; j < 8; j++) packed.v[j] = from_float<T>(out[j]);
            *reinterpret_cast<Pack8<T> *>(y + row * cols + c) = packed;
        }
    }
    if (FP8) {  // one atomic per warp
        amax = warp_max(amax);
        if (threadIdx.x % 32 == 0) atomic_max_nonneg(fp8.amax, amax);
    }
    if (threadIdx.x == 0) {
        mean_out[row] = mean;
        rstd_out[row] = rstd;
    }
}

// 16-byte asynchronous copy global -> shared (completes at cp.async.wait_group).
__device__ __forceinline__ void copy_async_16(void *smem, const void *gmem) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"((uint32_t)__cvta_generic_to_shared(smem)),
                 "l"(gmem));
}

// Starts copying this thread's packs of x, dy (and dresidual, if any) of `row` into the
// shared buffer `buf` ([x | dy | dresidual], cols each).
template <typename T, int VPT>
__device__ __forceinline__ void prefetch_row(T *buf, const T *x, const T *dy, const T *dresidual, int64_t row,
                                             int cols) {
#pragma unroll
    for (int i = 0; i < VPT; i++) {
        int c = (threadIdx.x + i * BWD_THREADS) * 8;
        if (c < cols) {
            copy_async_16(buf + c, x + row * cols + c);
            copy_async_16(buf + cols + c, dy + row * cols + c);
            if (dresidual) copy_async_16(buf + 2 * cols + c, dresidual + row * cols + c);
        }
    }
    asm volatile("cp.async.commit_group;\n" ::);
}

// Each block walks rows blockIdx.x, blockIdx.x + gridDim.x, ... keeping its share of dgamma
// and dbeta in registers; at the end it writes them to partial[blockIdx.x][cols]. The next
// row's x and dy are copied into shared memory (cp.async) while this row is computed, so a
// block always has loads in flight. Each thread reads back only the packs it copied itself,
// so the copies need no barrier.
template <typename T, int VPT>
__global__ void __launch_bounds__(BWD_THREADS) layernorm_backward_kernel(
    const T *dy, const T *x, const T *gamma, const float *mean, const float *rstd, const T *dresidual,
    T *dx, float *partial_dgamma, float *partial_dbeta, int64_t rows, int cols) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    // Two buffers of [x | dy | dresidual] rows, cols each.
    T *const smem = reinterpret_cast<T *>(smem_raw);
    float g[VPT][8], dgamma[VPT][8], dbeta[VPT][8];
#pragma unroll
    for (int i = 0; i < VPT; i++) {
        int c = (threadIdx.x + i * BWD_THREADS) * 8;
#pragma unroll
        for (int j = 0; j < 8; j++) dgamma[i][j] = dbeta[i][j] = 0.0f;
        if (c < cols) {
            Pack8<T> p = *reinterpret_cast<const Pack8<T> *>(gamma + c);
#pragma unroll
            for (int j = 0; j < 8; j++) g[i][j] = to_float(p.v[j]);
        } else {
#pragma unroll
            for (int j = 0; j < 8; j++) g[i][j] = 0.0f;
        }
    }
    // The row statistics are fetched one row ahead too: their load latency would otherwise
    // stall every row.
    float mu = 0.0f, rs = 0.0f;
    if (blockIdx.x < rows) {
        prefetch_row<T, VPT>(smem, x, dy, dresidual, blockIdx.x, cols);
        mu = mean[blockIdx.x], rs = rstd[blockIdx.x];
    }
    int it = 0;
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x, it++) {
        const int64_t next = row + gridDim.x;
        T *const buf = smem + (it & 1) * 3 * cols, *const nbuf = smem + ((it + 1) & 1) * 3 * cols;
        float next_mu = 0.0f, next_rs = 0.0f;
        if (next < rows) {
            prefetch_row<T, VPT>(nbuf, x, dy, dresidual, next, cols);
            next_mu = mean[next], next_rs = rstd[next];
        } else {
            asm volatile("cp.async.commit_group;\n" ::);  // keep one group per row
        }
        asm volatile("cp.async.wait_group 1;\n" ::);  // this row's copies are done
        float xv[VPT][8], dyv[VPT][8];
        load_row<T, VPT, BWD_THREADS>(buf, cols, xv);
        load_row<T, VPT, BWD_THREADS>(buf + cols, cols, dyv);
        float sum_g = 0.0f, sum_gx = 0.0f;
#pragma unroll
        for (int i = 0; i < VPT; i++)
#pragma unroll
            for (int j = 0; j < 8; j++) {
                xv[i][j] = (xv[i][j] - mu) * rs;  // xhat, in place
                float gy = dyv[i][j] * g[i][j];
                sum_g += gy;
                sum_gx += gy * xv[i][j];
                dgamma[i][j] += dyv[i][j] * xv[i][j];
                dbeta[i][j] += dyv[i][j];
            }
        float2 s = block_sum2<BWD_THREADS>(sum_g, sum_gx, it & 1);
        const float mean_g = s.x / cols, mean_gx = s.y / cols;
#pragma unroll
        for (int i = 0; i < VPT; i++) {
            int c = (threadIdx.x + i * BWD_THREADS) * 8;
            if (c >= cols) continue;
            Pack8<T> r;
            if (dresidual) r = *reinterpret_cast<const Pack8<T> *>(buf + 2 * cols + c);
            Pack8<T> out;
#pragma unroll
            for (int j = 0; j < 8; j++) {
                float d = rs * (dyv[i][j] * g[i][j] - mean_g - xv[i][j] * mean_gx);
                if (dresidual) d += to_float(r.v[j]);
                out.v[j] = from_float<T>(d);
            }
            *reinterpret_cast<Pack8<T> *>(dx + row * cols + c) = out;
        }
        mu = next_mu, rs = next_rs;
    }
    // Two 16-byte stores per pack and array: written one float at a time, these partial
    // rows cost a fifth of the kernel's time (98 -> 79 us at [8192 x 4096] on the H100).
#pragma unroll
    for (int i = 0; i < VPT; i++) {
        int c = (threadIdx.x + i * BWD_THREADS) * 8;
        if (c >= cols) continue;
        float4 *pg = reinterpret_cast<float4 *>(partial_dgamma + (int64_t)blockIdx.x * cols + c);
        float4 *pb = reinterpret_cast<float4 *>(partial_dbeta + (int64_t)blockIdx.x * cols + c);
        pg[0] = make_float4(dgamma[i][0], dgamma[i][1], dgamma[i][2], dgamma[i][3]);
        pg[1] = make_float4(dgamma[i][4], dgamma[i][5], dgamma[i][6], dgamma[i][7]);
        pb[0] = make_float4(dbeta[i][0], dbeta[i][1], dbeta[i][2], dbeta[i][3]);
        pb[1] = make_float4(dbeta[i][4], dbeta[i][5], dbeta[i][6], dbeta[i][7]);
    }
}

// Stage 2: add the blocks' partial sums. Each block takes 32 columns; its 32 rows of
// threads split the partial rows between them, then add up through shared memory.
template <typename T>
__global__ void __launch_bounds__(1024) sum_partials_kernel(const float *partial_dgamma, const float *partial_dbeta,
                                                            int blocks, int cols, T *dgamma, T *dbeta) {
    __shared__ float sg[32][33], sb[32][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    float a = 0.0f, b = 0.0f;
    if (c < cols)
        for (int k = threadIdx.y; k < blocks; k += 32) {
            a += partial_dgamma[(int64_t)k * cols + c];
            b += partial_dbeta[(int64_t)k * cols + c];
        }
    sg[threadIdx.y][threadIdx.x] = a;
    sb[threadIdx.y][threadIdx.x] = b;
    __syncthreads();
    if (threadIdx.y == 0 && c < cols) {
        for (int k = 1; k < 32; k++) a += sg[k][threadIdx.x], b += sb[k][threadIdx.x];
        dgamma[c] = from_float<T>(a);
        dbeta[c] = from_float<T>(b);
    }
}

static_assert(LAYERNORM_FAST_MAX_COLS == 16 * 8 * THREADS, "16 packs of 8 values per forward thread");

extern "C" const char *layernorm_fast_unsupported(int cols) {
    static char why[160];
    if (cols > 0 && cols % 8 == 0 && cols <= LAYERNORM_FAST_MAX_COLS) return NULL;
    snprintf(why, sizeof why, "the fast LayerNorm kernels take rows of a positive multiple of 8 values, at most %d "
             "(hidden is %d)", LAYERNORM_FAST_MAX_COLS, cols);
    return why;
}

// Packs per thread: the smallest power of two that covers the row.
static int packs_per_thread(int cols, int threads) {
    const char *why = layernorm_fast_unsupported(cols);
    if (why) DIE("%s", why);
    int packs = (cols / 8 + threads - 1) / threads, vpt = 1;
    while (vpt < packs) vpt *= 2;
    return vpt;
}

#define DISPATCH_VPT(vpt, V, ...)            \
    switch (vpt) {                           \
        case 1: { const int V = 1; __VA_ARGS__; break; } \
        case 2: { const int V = 2; __VA_ARGS__; break; } \
        case 4: { const int V = 4; __VA_ARGS__; break; } \
        case 8: { const int V = 8; __VA_ARGS__; break; } \
        default: { const int V = 16; __VA_ARGS__; break; } \
    }

extern "C" void layernorm_fast_forward(const void *x, const void *gamma, const void *beta, void *y,
                                       float *mean, float *rstd, int64_t rows, int cols, float eps,
                                       DType dtype) {
    int vpt = packs_per_thread(cols, THREADS);
    gpu_phase(CAT_LAYERNORM);
    DISPATCH_DTYPE(dtype, T, DISPATCH_VPT(vpt, V,
        layernorm_forward_kernel<T, V><<<(unsigned)rows, THREADS>>>(
            (const T *)x, (const T *)gamma, (const T *)beta, (T *)y, mean, rstd, cols, eps)));
    CHECK_LAUNCH();
    gpu_phase_end();
}

extern "C" void layernorm_fast_forward_fp8(const void *x, const void *gamma, const void *beta, uint8_t *y8,
                                           const float *scale, float *amax, Fp8Format format, float *mean,
                                           float *rstd, int64_t rows, int cols, float eps, DType dtype) {
    int vpt = packs_per_thread(cols, THREADS);
    const Fp8Out out = {y8, scale, amax, format};
    gpu_phase(CAT_LAYERNORM);
    DISPATCH_DTYPE(dtype, T, DISPATCH_VPT(vpt, V,
        (layernorm_forward_kernel<T, V, true><<<(unsigned)rows, THREADS>>>(
            (const T *)x, (const T *)gamma, (const T *)beta, NULL, mean, rstd, cols, eps, out))));
    CHECK_LAUNCH();
    gpu_phase_end();
}

// Blocks of the backward: enough to keep every multiprocessor busy with a few each.
static int backward_blocks(void) {
    static int blocks;
    if (!blocks) {
        int sms;
        CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
        blocks = 2 * sms;
    }
    return blocks;
}

extern "C" size_t layernorm_fast_backward_workspace_bytes(int cols) {
    return (size_t)backward_blocks() * cols * 2 * sizeof(float);
}

// The backward's dynamic shared memory: two buffers (cp.async double buffering) of a row of
// x, dy and dresidual, 2 bytes a value.
static size_t backward_smem_bytes(int cols) { return (size_t)2 * 3 * cols * 2; }

// NULL if backward_smem_bytes(cols) plus the kernel's own __shared__ arrays fit a block here.
template <typename T, int V>
static const char *backward_smem_problem(int cols) {
    static char why[400];
    cudaFuncAttributes attr;
    CUDA_CHECK(cudaFuncGetAttributes(&attr, layernorm_backward_kernel<T, V>));
    const size_t need = attr.sharedSizeBytes + backward_smem_bytes(cols), have = gpu_max_smem_per_block();
    if (need <= have) return NULL;
    const long most = (long)(have - attr.sharedSizeBytes) / 12 / 8 * 8;
    snprintf(why, sizeof why,
             "LayerNorm backward: rows of %d values need %zu bytes of shared memory per block (two rows each "
             "of x, dy and dresidual), and a block may use %zu on this GPU (%s): at most %ld values per row here",
             cols, need, have, gpu_description(), most);
    return why;
}

extern "C" const char *layernorm_fast_backward_unsupported(int cols, DType dtype) {
    const char *why = NULL;
    int vpt = packs_per_thread(cols, BWD_THREADS);
    DISPATCH_DTYPE(dtype, T, DISPATCH_VPT(vpt, V, why = backward_smem_problem<T, V>(cols)));
    return why;
}

extern "C" void layernorm_fast_backward(const void *dy, const void *x, const void *gamma,
                                        const float *mean, const float *rstd, const void *dresidual,
                                        void *dx, void *dgamma, void *dbeta, void *workspace,
                                        int64_t rows, int cols, DType dtype) {
    int vpt = packs_per_thread(cols, BWD_THREADS);
    int blocks = backward_blocks();
    if (rows < blocks) blocks = (int)rows;
    float *partial_dgamma = (float *)workspace, *partial_dbeta = partial_dgamma + (size_t)blocks * cols;
    const size_t smem = backward_smem_bytes(cols);
    const char *why = layernorm_fast_backward_unsupported(cols, dtype);  // modules check it at init
    if (why) fail_user("%s", why);
    // Dynamic shared memory past 48 KB must be allowed explicitly (a cheap host call).
    gpu_phase(CAT_LAYERNORM);
    DISPATCH_DTYPE(dtype, T, DISPATCH_VPT(vpt, V,
        CUDA_CHECK(cudaFuncSetAttribute(layernorm_backward_kernel<T, V>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem))));
    DISPATCH_DTYPE(dtype, T, {
        DISPATCH_VPT(vpt, V,
            layernorm_backward_kernel<T, V><<<blocks, BWD_THREADS, smem>>>(
                (const T *)dy, (const T *)x, (const T *)gamma, mean, rstd, (const T *)dresidual, (T *)dx,
                partial_dgamma, partial_dbeta, rows, cols));
        CHECK_LAUNCH();
        sum_partials_kernel<T><<<ceil_div(cols, 32), dim3(32, 32)>>>(partial_dgamma, partial_dbeta, blocks, cols,
                                                             (T *)dgamma, (T *)dbeta);
    });
    CHECK_LAUNCH();
    gpu_phase_end();
}
