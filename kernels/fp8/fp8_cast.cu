#include <float.h>

#include "common/gpu/gpu_phase.h"
#include "kernels/device_utils.cuh"
#include "kernels/fp8/fp8_cast.h"
#include "kernels/fp8_device.cuh"

__global__ void encode_kernel(const float *x, uint8_t *out, int64_t n, Fp8Format f) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = (uint8_t)to_fp8(x[i], f);
}

extern "C" void fp8_encode_device(const float *x, uint8_t *out, int64_t n, Fp8Format format) {
    gpu_phase(CAT_FP8_CAST);
    encode_kernel<<<ceil_div(n, 256), 256>>>(x, out, n, format);
    CHECK_LAUNCH();
    gpu_phase_end();
}

// The cast + transpose, transposing in registers.
//
// A block of 8 warps covers a tile of 128 rows x 128 columns, each warp a 32 x 64 piece of
// it, each thread 8 rows x 8 columns: eight 16-byte loads, all in flight at once. It converts
// its 8 x 8 values and writes
//   out:   its 8 rows of 8 codes, one 8-byte store each;
//   out_t: its 8 columns of 8 codes (regathered with byte permutes), one 8-byte store each.
// The lanes are laid out 8 across (columns) by 4 down (rows): 8 lanes read 128 contiguous
// bytes of a row of x and write 64 of a row of out; 4 lanes write 32 contiguous bytes of a
// row of out_t - every access fills whole 32-byte sectors. (At [8192 x 16384] on the H100:
// 88% of a copy's bandwidth in fp8_bench; in a sweep of variants, 4 rows per thread gave 63%;
// the first version, 64 x 64 tiles through shared memory with 4-byte accesses, 39%.) Optionally it also sums each column over the
// tile's 128 rows (the bias gradient, when x is a Linear's output gradient) into one partial
// row per tile, or cast GELU(x) instead of x (step 05's FC2 input: GELU written straight to
// FP8, never stored in 16 bits), or x * GELU'(pre) (step 05's FC1 output gradient: GELU's
// backward done by the cast, its 16-bit result never stored). rows % 8 == 0, cols % 8 == 0.
static const int CT_ROWS = 128, CT_COLS = 128, CT_RPT = 8;

// Byte j of each of four 8-byte rows (row k's bytes: lo[k] = 0..3, hi[k] = 4..7), as one word.
__device__ __forceinline__ uint32_t gather_column(const uint32_t *lo, const uint32_t *hi, int j) {
    const uint32_t *w = j < 4 ? lo : hi;
    const uint32_t sel = (uint32_t)(j & 3) | (uint32_t)((j & 3) + 4) << 4;  // byte j of a, of b
    uint32_t r01 = __byte_perm(w[0], w[1], sel), r23 = __byte_perm(w[2], w[3], sel);
    return __byte_perm(r01, r23, 0x5410);
}

template <typename T, bool DBIAS, bool GELU = false, bool DGELU = false>
__global__ void __launch_bounds__(256) cast_transpose_kernel(const T *x, uint8_t *out, uint8_t *out_t, int64_t rows,
                                                             int64_t cols, const float *scale, float *amax,
                                                             Fp8Format f, float *dbias_partial,
                                                             const T *pre = nullptr) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int warp_row = warp / 2, warp_col = warp % 2;  // 4 x 2 warps of 32 x 64
    const int lane_row = lane / 8, lane_col = lane % 8;  // 4 x 8 lanes of 8 x 8
    const int tile_col = 64 * warp_col + 8 * lane_col;   // within the block's 128 columns
    const int64_t r = (int64_t)blockIdx.y * CT_ROWS + 32 * warp_row + CT_RPT * lane_row;
    const int64_t c = (int64_t)blockIdx.x * CT_COLS + tile_col;
    const bool inside = r < rows && c < cols;
    const float s = *scale;
    Pack8<T> p[CT_RPT], q[DGELU ? CT_RPT : 1];
#pragma unroll
    for (int k = 0; k < CT_RPT; k++)
        if (inside) {
            p[k] = *reinterpret_cast<const Pack8<T> *>(x + (r + k) * cols + c);
            if (DGELU) q[k] = *reinterpret_cast<const Pack8<T> *>(pre + (r + k) * cols + c);
        }
    float local = 0.0f, col_sum[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    uint32_t lo[CT_RPT], hi[CT_RPT];
#pragma unroll
    for (int k = 0; k < CT_RPT; k++) {
        uint32_t code[8];
#pragma unroll
        for (int j = 0; j < 8; j++) {
            float v = inside ? to_float(p[k].v[j]) : 0.0f;
            if (GELU) v = gelu_tanh(v);  // gelu(0) = 0: the padding stays zero
            if (DGELU && inside) v *= gelu_tanh_grad(to_float(q[DGELU ? k : 0].v[j]));
            local = fmaxf(local, fabsf(v));
            if (DBIAS) col_sum[j] += v;
            code[j] = to_fp8(v * s, f);
        }
        lo[k] = pack_fp8x4(code), hi[k] = pack_fp8x4(code + 4);
    }
    if (inside) {
        if (out)
#pragma unroll
            for (int k = 0; k < CT_RPT; k++)
                *reinterpret_cast<uint2 *>(out + (r + k) * cols + c) = make_uint2(lo[k], hi[k]);
        if (out_t)
#pragma unroll
            for (int j = 0; j < 8; j++)  // rows r .. r + 3 and r + 4 .. r + 7 of column c + j
                *reinterpret_cast<uint2 *>(out_t + (c + j) * rows + r) =
                    make_uint2(gather_column(lo, hi, j), gather_column(lo + 4, hi + 4, j));
    }
    if (DBIAS) {  // column sums over the tile's 128 rows (rows past the end count as zeros)
        __shared__ float warp_sums[4][CT_COLS];
#pragma unroll
        for (int j = 0; j < 8; j++)
            for (int o = 8; o < 32; o *= 2) col_sum[j] += __shfl_xor_sync(0xffffffffu, col_sum[j], o);  // lane_row
        if (lane_row == 0)
#pragma unroll
            for (int j = 0; j < 8; j++) warp_sums[warp_row][tile_col + j] = col_sum[j];
        __syncthreads();
        const int64_t cc = (int64_t)blockIdx.x * CT_COLS + threadIdx.x;
        if (threadIdx.x < CT_COLS && cc < cols)
            dbias_partial[(int64_t)blockIdx.y * cols + cc] = warp_sums[0][threadIdx.x] + warp_sums[1][threadIdx.x] +
                                                             warp_sums[2][threadIdx.x] + warp_sums[3][threadIdx.x];
    }
    local = warp_max(local);
    if (lane == 0 && amax) atomic_max_nonneg(amax, local);
}

static void check_cast_shape(const char *who, int64_t rows, int64_t cols) {
    if (rows % CT_RPT || cols % 8)
        DIE("%s: %lld x %lld needs rows and cols multiples of 8", who, (long long)rows,
            (long long)cols);
}

// out_t = the transpose of FP8 codes x [rows, cols], with the cast kernel's layout: each thread
// moves an 8 x 8 block of bytes (one 8-byte load per row, one 8-byte store per column).
__global__ void __launch_bounds__(256) transpose_bytes_kernel(const uint8_t *x, uint8_t *out_t, int64_t rows,
                                                              int64_t cols) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t r = (int64_t)blockIdx.y * CT_ROWS + 32 * (warp / 2) + CT_RPT * (lane / 8);
    const int64_t c = (int64_t)blockIdx.x * CT_COLS + 64 * (warp % 2) + 8 * (lane % 8);
    if (r >= rows || c >= cols) return;
    uint32_t lo[CT_RPT], hi[CT_RPT];
#pragma unroll
    for (int k = 0; k < CT_RPT; k++) {
        uint2 v = *reinterpret_cast<const uint2 *>(x + (r + k) * cols + c);
        lo[k] = v.x, hi[k] = v.y;
    }
#pragma unroll
    for (int j = 0; j < 8; j++)
        *reinterpret_cast<uint2 *>(out_t + (c + j) * rows + r) =
            make_uint2(gather_column(lo, hi, j), gather_column(lo + 4, hi + 4, j));
}

extern "C" void fp8_transpose(const uint8_t *x, uint8_t *out_t, int64_t rows, int64_t cols) {
    check_cast_shape("fp8_transpose", rows, cols);
    dim3 grid(ceil_div(cols, CT_COLS), ceil_div(rows, CT_ROWS));
    gpu_phase(CAT_FP8_CAST);
    transpose_bytes_kernel<<<grid, 256>>>(x, out_t, rows, cols);
    CHECK_LAUNCH();
    gpu_phase_end();
}

// dbias[c] = the sum of the tiles' partial rows (one thread per column: coalesced reads).
template <typename T>
__global__ void sum_partial_rows_kernel(const float *partial, int tiles, int64_t cols, T *dbias) {
    int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    float acc = 0.0f;
    for (int t = 0; t < tiles; t++) acc += partial[(int64_t)t * cols + c];
    dbias[c] = from_float<T>(acc);
}


extern "C" void fp8_cast_transpose(const void *x, uint8_t *out, uint8_t *out_t, int64_t rows, int64_t cols,
                                   const float *scale, float *amax, Fp8Format format, DType dtype) {
    check_cast_shape("fp8_cast_transpose", rows, cols);
    dim3 grid(ceil_div(cols, CT_COLS), ceil_div(rows, CT_ROWS));
    gpu_phase(CAT_FP8_CAST);
    DISPATCH_DTYPE(dtype, T,
                   cast_transpose_kernel<T, false><<<grid, 256>>>((const T *)x, out, out_t, rows, cols, scale, amax,
                                                                  format, NULL));
    CHECK_LAUNCH();
    gpu_phase_end();
}

extern "C" void fp8_gelu_cast_transpose(const void *x, uint8_t *out, uint8_t *out_t, int64_t rows, int64_t cols,
                                        const float *scale, float *amax, Fp8Format format, DType dtype) {
    check_cast_shape("fp8_gelu_cast_transpose", rows, cols);
    dim3 grid(ceil_div(cols, CT_COLS), ceil_div(rows, CT_ROWS));
    gpu_phase(CAT_FP8_CAST);
    DISPATCH_DTYPE(dtype, T,
                   (cast_transpose_kernel<T, false, true><<<grid, 256>>>((const T *)x, out, out_t, rows, cols, scale,
                                                                         amax, format, NULL)));
    CHECK_LAUNCH();
    gpu_phase_end();
}

extern "C" void fp8_dgelu_cast_transpose_dbias(const void *dy, const void *pre, uint8_t *out, uint8_t *out_t,
                                               int64_t rows, int64_t cols, const float *scale, float *amax,
                                               Fp8Format format, DType dtype, void *dbias, float *workspace) {
    check_cast_shape("fp8_dgelu_cast_transpose_dbias", rows, cols);
    const int tiles = (int)ceil_div(rows, CT_ROWS);
    dim3 grid(ceil_div(cols, CT_COLS), tiles);
    gpu_phase(CAT_FP8_CAST);
    DISPATCH_DTYPE(dtype, T, {
        cast_transpose_kernel<T, true, false, true><<<grid, 256>>>((const T *)dy, out, out_t, rows, cols, scale,
                                                                   amax, format, workspace, (const T *)pre);
        CHECK_LAUNCH();
        sum_partial_rows_kernel<T><<<ceil_div(cols, 256), 256>>>(workspace, tiles, cols, (T *)dbias);
    });
    CHECK_LAUNCH();
    gpu_phase_end();
}

extern "C" size_t fp8_cast_transpose_dbias_workspace_bytes(int64_t rows, int64_t cols) {
    return (size_t)ceil_div(rows, CT_ROWS) * cols * sizeof(float);
}

extern "C" void fp8_cast_transpose_dbias(const void *x, uint8_t *out, uint8_t *out_t, int64_t rows, int64_t cols,
                                         const float *scale, float *amax, Fp8Format format, DType dtype,
                                         void *dbias, float *workspace) {
    check_cast_shape("fp8_cast_transpose_dbias", rows, cols);
    const int tiles = (int)ceil_div(rows, CT_ROWS);
    dim3 grid(ceil_div(cols, CT_COLS), tiles);
    gpu_phase(CAT_FP8_CAST);
    DISPATCH_DTYPE(dtype, T, {
        cast_transpose_kernel<T, true><<<grid, 256>>>((const T *)x, out, out_t, rows, cols, scale, amax, format,
                                                      workspace);
        CHECK_LAUNCH();
        sum_partial_rows_kernel<T><<<ceil_div(cols, 256), 256>>>(workspace, tiles, cols, (T *)dbias);
    });
    CHECK_LAUNCH();
    gpu_phase_end();
}

__global__ void update_scale_kernel(float *meta, int len, float fp8_max, int margin, int most_recent) {
    float *hist = meta + FP8_META_HISTORY;
    float amax = hist[0];
    if (!most_recent)
        for (int i = 1; i < len; i++) amax = fmaxf(amax, hist[i]);
    float scale = meta[FP8_META_SCALE];
    if (amax > 0.0f && isfinite(amax)) {
        float s = (fp8_max / amax) / ldexpf(1.0f, margin);
        scale = isfinite(s) ? s : FLT_MAX;
    }
    meta[FP8_META_SCALE] = scale;
    meta[FP8_META_SCALE_INV] = 1.0f / scale;
    for (int i = len - 1; i > 0; i--) hist[i] = hist[i - 1];
    hist[0] = 0.0f;
}

extern "C" void fp8_update_scale_device(float *meta, int history_len, float fp8_max, int margin, int most_recent) {
    gpu_phase(CAT_FP8_CAST);
    update_scale_kernel<<<1, 1>>>(meta, history_len, fp8_max, margin, most_recent);
    CHECK_LAUNCH();
    gpu_phase_end();
}
