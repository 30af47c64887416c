#include "common/gpu/gpu_phase.h"
#include "kernels/device_utils.cuh"
#include "kernels/fused/bias_epilogue.h"

// V consecutive values of one row: one access (16 bytes when V = 8).
template <typename T, int V>
struct alignas(sizeof(T) * V) Vec {
    T v[V];
};

template <typename T, int V>
__device__ __forceinline__ Vec<T, V> load_vec(const T *p) {
    return *reinterpret_cast<const Vec<T, V> *>(p);
}

template <typename T, int V>
__device__ __forceinline__ void store_vec(T *p, const Vec<T, V> &x) {
    *reinterpret_cast<Vec<T, V> *>(p) = x;
}

// ---- bias add, bias + GELU ------------------------------------------------------------------
// A 2D grid: x over packs of V columns (one per thread), y over rows (strided). A thread keeps
// its V bias values in registers for every row it visits, and no thread divides by cols.
template <typename T, int V, bool GELU>
__global__ void bias_act_kernel(T *pre, const T *bias, T *out, int64_t rows, int cols) {
    const int c = (blockIdx.x * blockDim.x + threadIdx.x) * V;
    if (c >= cols) return;
    const Vec<T, V> bv = load_vec<T, V>(bias + c);
    float b[V];
#pragma unroll
    for (int j = 0; j < V; j++) b[j] = to_float(bv.v[j]);
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
        Vec<T, V> x = load_vec<T, V>(pre + r * cols + c), y;
#pragma unroll
        for (int j = 0; j < V; j++) {
            const float z = to_float(x.v[j]) + b[j];
            x.v[j] = from_float<T>(z);
            if (GELU) y.v[j] = from_float<T>(gelu_tanh(z));
        }
        store_vec<T, V>(pre + r * cols + c, x);
        if (GELU) store_vec<T, V>(out + r * cols + c, y);
    }
}

enum { THREADS = 256, TARGET_BLOCKS = 2048 };

// 8 values per access when every row starts 16-byte aligned, else 1.
static int vector_width(int cols, const void *a, const void *b, const void *c) {
    return cols % 8 == 0 && aligned16(a) && aligned16(b) && (!c || aligned16(c)) ? 8 : 1;
}

// Enough row-strided blocks to fill any GPU several times over (TARGET_BLOCKS in all).
static dim3 row_grid(int64_t rows, int cols, int v) {
    const unsigned x = ceil_div(ceil_div(cols, v), THREADS);
    int64_t y = TARGET_BLOCKS / x;
    if (y < 1) y = 1;
    if (y > rows) y = rows;
    if (y > 65535) y = 65535;
    return dim3(x, (unsigned)y);
}

template <bool GELU>
static void launch_bias_act(void *pre, const void *bias, void *out, int64_t rows, int cols, DType dtype) {
    if (cols < 1) DIE("bias epilogue kernel: cols %d < 1", cols);
    if (rows <= 0) return;
    const int v = vector_width(cols, pre, bias, out);
    const dim3 grid = row_grid(rows, cols, v);
    gpu_phase(CAT_ELEMENTWISE);
    if (v == 8)
        DISPATCH_DTYPE(dtype, T,
                       bias_act_kernel<T, 8, GELU><<<grid, THREADS>>>((T *)pre, (const T *)bias, (T *)out, rows, cols));
    else
        DISPATCH_DTYPE(dtype, T,
                       bias_act_kernel<T, 1, GELU><<<grid, THREADS>>>((T *)pre, (const T *)bias, (T *)out, rows, cols));
    CHECK_LAUNCH();
    gpu_phase_end();
}

extern "C" void bias_add_rows(void *y, const void *bias, int64_t rows, int cols, DType dtype) {
    launch_bias_act<false>(y, bias, NULL, rows, cols, dtype);
}

extern "C" void bias_gelu_forward(void *pre, const void *bias, void *out, int64_t rows, int cols, DType dtype) {
    launch_bias_act<true>(pre, bias, out, rows, cols, dtype);
}

// ---- bias gradient: column sums in two passes ------------------------------------------------
// Pass 1: block (x, y) sums rows [y * rows_per_chunk, (y + 1) * rows_per_chunk) of the
// GRAD_X * V columns x covers. Its GRAD_X x GRAD_Y threads: x a pack of V columns, y a lane of
// rows (rows y, y + GRAD_Y, ...), so a warp reads GRAD_X * V adjacent values (512 bytes when
// V = 8) of one row per access. The GRAD_Y lanes are then added in a fixed order in shared
// memory, and the chunk's sums go to partial[chunk][col].
enum { GRAD_X = 32, GRAD_Y = 8, MAX_CHUNKS = 64, UNROLL = 4 };

template <typename T, int V>
__global__ void bias_grad_partial_kernel(const T *dy, int64_t rows, int cols, int64_t rows_per_chunk,
                                         float *partial) {
    __shared__ float lane_sums[GRAD_Y][GRAD_X * V + 1];
    const int c = (blockIdx.x * GRAD_X + threadIdx.x) * V;
    const int64_t begin = blockIdx.y * rows_per_chunk;
    const int64_t end = begin + rows_per_chunk < rows ? begin + rows_per_chunk : rows;
    float acc[V];
#pragma unroll
    for (int j = 0; j < V; j++) acc[j] = 0.0f;
    if (c < cols) {
        int64_t r = begin + threadIdx.y;
        // UNROLL loads in flight per thread before they are added (the sums stay in row order).
        for (; r + (UNROLL - 1) * GRAD_Y < end; r += UNROLL * GRAD_Y) {
            Vec<T, V> x[UNROLL];
#pragma unroll
            for (int u = 0; u < UNROLL; u++) x[u] = load_vec<T, V>(dy + (r + u * GRAD_Y) * cols + c);
#pragma unroll
            for (int u = 0; u < UNROLL; u++)
#pragma unroll
                for (int j = 0; j < V; j++) acc[j] += to_float(x[u].v[j]);
        }
        for (; r < end; r += GRAD_Y) {
            const Vec<T, V> x = load_vec<T, V>(dy + r * cols + c);
#pragma unroll
            for (int j = 0; j < V; j++) acc[j] += to_float(x.v[j]);
        }
    }
#pragma unroll
    for (int j = 0; j < V; j++) lane_sums[threadIdx.y][threadIdx.x * V + j] = acc[j];
    __syncthreads();
    const int tid = threadIdx.y * GRAD_X + threadIdx.x;
    for (int k = tid; k < GRAD_X * V; k += GRAD_X * GRAD_Y) {
        const int col = blockIdx.x * GRAD_X * V + k;
        if (col >= cols) break;
        float s = 0.0f;
#pragma unroll
        for (int y = 0; y < GRAD_Y; y++) s += lane_sums[y][k];
        partial[(int64_t)blockIdx.y * cols + col] = s;
    }
}

// Pass 2: one thread per column adds its chunks' sums, chunk 0 first.
template <typename T>
__global__ void bias_grad_finish_kernel(const float *partial, int chunks, int cols, T *dbias) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    float s = 0.0f;
    for (int k = 0; k < chunks; k++) s += partial[(int64_t)k * cols + c];
    dbias[c] = from_float<T>(s);
}

extern "C" size_t bias_grad_workspace_bytes(int cols) { return (size_t)MAX_CHUNKS * (cols > 0 ? cols : 0) * sizeof(float); }

// How many chunks of rows: enough blocks (with the column blocks) to fill the GPU, at most
// MAX_CHUNKS, and at least 64 rows in each. A function of the shape only: the order of the
// additions, hence the bits, never depends on the GPU.
static int row_chunks(int64_t rows, int col_blocks) {
    int64_t chunks = TARGET_BLOCKS / 2 / col_blocks;
    if (chunks > MAX_CHUNKS) chunks = MAX_CHUNKS;
    const int64_t by_rows = (rows + 63) / 64;
    if (chunks > by_rows) chunks = by_rows;
    return chunks < 1 ? 1 : (int)chunks;
}

extern "C" void bias_grad_columns(const void *dy, int64_t rows, int cols, void *dbias, void *workspace,
                                  DType dtype) {
    bias_grad_columns_on(dy, rows, cols, dbias, workspace, dtype, NULL);
}

extern "C" void bias_grad_columns_on(const void *dy, int64_t rows, int cols, void *dbias, void *workspace,
                                     DType dtype, cudaStream_t stream) {
    if (cols < 1) DIE("bias_grad_columns: cols %d < 1", cols);
    if (!workspace) DIE("bias_grad_columns: no workspace (bias_grad_workspace_bytes(%d) bytes)", cols);
    const int v = vector_width(cols, dy, workspace, NULL);
    const int col_blocks = (int)ceil_div(cols, GRAD_X * v);
    int chunks = 0;
    gpu_phase(CAT_ELEMENTWISE);
    if (rows > 0) {
        chunks = row_chunks(rows, col_blocks);
        const int64_t rows_per_chunk = (rows + chunks - 1) / chunks;
        chunks = (int)((rows + rows_per_chunk - 1) / rows_per_chunk);  // no empty chunk
        const dim3 grid(col_blocks, chunks), block(GRAD_X, GRAD_Y);
        if (v == 8)
            DISPATCH_DTYPE(dtype, T,
                           bias_grad_partial_kernel<T, 8><<<grid, block, 0, stream>>>(
                               (const T *)dy, rows, cols, rows_per_chunk, (float *)workspace));
        else
            DISPATCH_DTYPE(dtype, T,
                           bias_grad_partial_kernel<T, 1><<<grid, block, 0, stream>>>(
                               (const T *)dy, rows, cols, rows_per_chunk, (float *)workspace));
        CHECK_LAUNCH();
    }
    DISPATCH_DTYPE(dtype, T,
                   bias_grad_finish_kernel<T><<<ceil_div(cols, THREADS), THREADS, 0, stream>>>(
                       (const float *)workspace, chunks, cols, (T *)dbias));
    CHECK_LAUNCH();
    gpu_phase_end();
}
