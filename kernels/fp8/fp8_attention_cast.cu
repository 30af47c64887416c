// Q, K, V of the fused QKV tensor to E4M3, V transposed (fp8_attention_cast.h).
#include "common/core/errors.h"
#include "common/gpu/gpu_phase.h"
#include "kernels/device_utils.cuh"
#include "kernels/fp8/fp8_attention_cast.h"
#include "kernels/fp8/fp8_cast.h"
#include "kernels/fp8_device.cuh"

namespace {

constexpr int HEAD_DIM = 128;
constexpr int KEYS = 64;                   // tokens per block
constexpr int THREADS = 256;
constexpr int CHUNKS = HEAD_DIM / 8;       // 16-byte loads (8 values) per row of one head
constexpr int TILE_ROW = HEAD_DIM + 8;     // V's codes in shared memory: [KEYS][TILE_ROW] bytes
constexpr int ITERS = KEYS * CHUNKS / THREADS;  // chunks per thread and tensor: 4

struct CastArgs {
    int seq, batch, heads;
    int64_t qkv_row_stride, vt_row_stride;
    uint8_t *q8, *k8, *vt8;
    const float *q_scale, *k_scale, *v_scale;
    float *q_amax, *k_amax, *v_amax;
};

// Eight values to eight E4M3 codes (memory order), their max |x| folded into *amax.
template <typename T>
__device__ __forceinline__ uint2 cast8(const Pack8<T> &p, float scale, float *amax) {
    uint32_t code[8];
#pragma unroll
    for (int j = 0; j < 8; j++) {
        const float v = to_float(p.v[j]);
        *amax = fmaxf(*amax, fabsf(v));
        code[j] = to_fp8(v * scale, FP8_E4M3);
    }
    return make_uint2(pack_fp8x4(code), pack_fp8x4(code + 4));
}

// Block (x, y): keys [64 x, 64 x + 64) of head y % heads of batch entry y / heads.
// Phase 1: thread t casts chunk (row, chunk) = divmod(t + 256 i, 16), i < 4, of Q, K and V
// (16 threads read one row's 256 bytes: coalesced); Q's and K's codes go straight out, V's
// into the tile. Phase 2: thread t writes 32 keys (half t / 128) of Vt's row c = t % 128,
// reading tile column c (a warp's 32 threads read 32 consecutive bytes of a row: no bank
// conflicts) and storing 2 x 16 bytes.
template <typename T>
__global__ void __launch_bounds__(THREADS) cast_qkv_kernel(const T *qkv, CastArgs a) {
    __shared__ __align__(16) uint8_t tile[KEYS][TILE_ROW];
    __shared__ float block_amax[3][THREADS / 32];
    const int b = blockIdx.y / a.heads, h = blockIdx.y % a.heads;
    const int key0 = blockIdx.x * KEYS;
    const float q_scale = *a.q_scale, k_scale = *a.k_scale, v_scale = *a.v_scale;
    float amax[3] = {0.0f, 0.0f, 0.0f};  // q, k, v
#pragma unroll
    for (int i = 0; i < ITERS; i++) {
        const int idx = threadIdx.x + THREADS * i, row = idx / CHUNKS, chunk = idx % CHUNKS;
        const int s = key0 + row;
        if (s < a.seq) {
            const int64_t token = (int64_t)s * a.batch + b;
            const T *src = qkv + token * a.qkv_row_stride + (int64_t)h * 3 * HEAD_DIM + 8 * chunk;
            const int64_t dst = (token * a.heads + h) * HEAD_DIM + 8 * chunk;
            *reinterpret_cast<uint2 *>(a.q8 + dst) =
                cast8(*reinterpret_cast<const Pack8<T> *>(src), q_scale, &amax[0]);
            *reinterpret_cast<uint2 *>(a.k8 + dst) =
                cast8(*reinterpret_cast<const Pack8<T> *>(src + HEAD_DIM), k_scale, &amax[1]);
            *reinterpret_cast<uint2 *>(&tile[row][8 * chunk]) =
                cast8(*reinterpret_cast<const Pack8<T> *>(src + 2 * HEAD_DIM), v_scale, &amax[2]);
        } else {
            *reinterpret_cast<uint2 *>(&tile[row][8 * chunk]) = make_uint2(0u, 0u);  // past seq: zeros
        }
    }
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
    for (int t = 0; t < 3; t++) {
        const float m = warp_max(amax[t]);
        if (lane == 0) block_amax[t][warp] = m;
    }
    __syncthreads();
    if (threadIdx.x < 3) {  // one atomic per tensor and block
        float m = 0.0f;
        for (int w = 0; w < THREADS / 32; w++) m = fmaxf(m, block_amax[threadIdx.x][w]);
        float *const dst[3] = {a.q_amax, a.k_amax, a.v_amax};
        atomic_max_nonneg(dst[threadIdx.x], m);
    }
    const int c = threadIdx.x % HEAD_DIM, key_half = threadIdx.x / HEAD_DIM;
    uint8_t *vt_row = a.vt8 + ((int64_t)blockIdx.y * HEAD_DIM + c) * a.vt_row_stride + key0 + 32 * key_half;
#pragma unroll
    for (int part = 0; part < 2; part++) {  // 16 keys each
        const int first = key0 + 32 * key_half + 16 * part;
        if (first >= a.vt_row_stride) break;  // vt_row_stride % 16 == 0: a part is all in or all out
        uint32_t w[4];
#pragma unroll
        for (int q = 0; q < 4; q++) {
            const int r = 32 * key_half + 16 * part + 4 * q;
            w[q] = (uint32_t)tile[r][c] | (uint32_t)tile[r + 1][c] << 8 | (uint32_t)tile[r + 2][c] << 16 |
                   (uint32_t)tile[r + 3][c] << 24;
        }
        *reinterpret_cast<uint4 *>(vt_row + 16 * part) = make_uint4(w[0], w[1], w[2], w[3]);
    }
}

}  // namespace

extern "C" void fp8_cast_qkv_for_attention(const Fp8AttentionCast *p, const void *qkv, uint8_t *q8, uint8_t *k8,
                                           uint8_t *vt8, float *q_meta, float *k_meta, float *v_meta) {
    if (p->head_dim != HEAD_DIM) DIE("fp8_cast_qkv_for_attention: head_dim %d (only 128)", p->head_dim);
    if (p->seq < 1 || p->batch < 1 || p->heads < 1 || (int64_t)p->batch * p->heads > 65535)
        DIE("fp8_cast_qkv_for_attention: seq %d, batch %d, heads %d", p->seq, p->batch, p->heads);
    const int64_t packed = 3LL * p->heads * HEAD_DIM;
    const int64_t qkv_row = p->qkv_row_stride ? p->qkv_row_stride : packed;
    if (qkv_row < packed || qkv_row % 8)
        DIE("fp8_cast_qkv_for_attention: qkv_row_stride %lld (>= %lld, a multiple of 8)", (long long)qkv_row,
            (long long)packed);
    if (p->vt_row_stride < p->seq || p->vt_row_stride % 16)
        DIE("fp8_cast_qkv_for_attention: vt_row_stride %lld (>= seq %d, a multiple of 16)",
            (long long)p->vt_row_stride, p->seq);
    if (!qkv || !q8 || !k8 || !vt8 || !q_meta || !k_meta || !v_meta)
        DIE("fp8_cast_qkv_for_attention: a NULL pointer");
    if (!aligned16(qkv) || !aligned16(q8) || !aligned16(k8) || !aligned16(vt8))
        DIE("fp8_cast_qkv_for_attention: qkv, q8, k8 and vt8 must be 16-byte aligned");
    const CastArgs a = {p->seq, p->batch, p->heads, qkv_row, p->vt_row_stride, q8, k8, vt8,
                        q_meta + FP8_META_SCALE, k_meta + FP8_META_SCALE, v_meta + FP8_META_SCALE,
                        q_meta + FP8_META_HISTORY, k_meta + FP8_META_HISTORY, v_meta + FP8_META_HISTORY};
    // Blocks along x cover vt's whole row (the padding keys too), so every byte of vt8 is written.
    const dim3 grid(ceil_div(p->vt_row_stride, KEYS), p->batch * p->heads);
    gpu_phase(CAT_FP8_CAST);
    DISPATCH_DTYPE(p->dtype, T, cast_qkv_kernel<T><<<grid, THREADS>>>((const T *)qkv, a));
    CHECK_LAUNCH();
    gpu_phase_end();
}
