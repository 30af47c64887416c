// The FP8 (E4M3) flash-attention forward (kernels/attention/attention_fp8.h) against the CPU.
//
// Each case draws fresh random Q, K, V (test_seed; TEST_SEED=<n> replays a run), quantises them
// on the host to E4M3 with per-tensor scales (common/fp8's encoder; scale = 448 / amax, TE's
// delayed-scaling rule with margin 0), and compares the GPU's ctx and lse with two references:
//
//   1. the project's CPU attention (reference/attention_reference.h, ref_flash_attention_forward)
//      in float on the DEQUANTISED Q, K, V: the kernel differs from it only by P's rounding to
//      E4M3 (and the order of the sums, and ctx's rounding to 16 bits). The tolerance: E4M3 keeps
//      3 mantissa bits, so each P value is off by at most 2^-4 relative (round to nearest), about
//      2^-4 / sqrt(3) ~ 0.036 RMS at the worst mantissa and ~0.027 on average; those errors are
//      independent in sign, and so O = sum p v / sum p is off by about the same fraction of its
//      own size (the errors and O both grow as sqrt(sum p^2) |v|). TOL_CTX = 0.06 leaves about
//      twice that. lse does not go through P's rounding (the row sums are taken in float):
//      TOL_LSE = 1e-4, as for the 16-bit kernels.
//   2. an emulation of the kernel's own arithmetic on the host (emulate_fp8_forward): the same
//      tiles of 128 keys, the same running maximum, P * 256 rounded to E4M3 by the encoder
//      (bit-exact with the GPU's conversion, tests/fp8) before P V. What remains is the order of
//      the sums, exp2's approximation, ctx's 16-bit rounding (bf16: ~1.1e-3 RMS) and the tensor
//      cores' accumulation of S, which for FP8 inputs is reportedly narrower than float (about
//      14 bits, DeepSeek-V3's report, arXiv 2412.19437, section 3.3.2): S then differs from the
//      double emulation by ~1e-4 relative, which flips P's E4M3 rounding for ~0.2% of the
//      probabilities (each by one step, 2^-3 relative), ~3e-3 of O. TOL_EMULATED = 1e-2, half
//      of what P's rounding itself costs against reference 1 (1-2e-2): a kernel that
//      quantised P differently from what it claims (truncating instead of rounding, say) would likely
//      pass 1. but fail this.
//
// Can the comparison fail? test_a_planted_bug_fails (CPU only, it runs without a GPU too) makes
// the output of the most likely bug - P's keys left in the accumulator's order instead of
// permuted into the operand's (flash_forward_fp8.cu's picture), i.e. key j's probability
// multiplied with another row of V - by the same emulation, and asserts that it is further
// from reference 1 than 4 x TOL_CTX (measured: ~1.2, such an output is about uncorrelated with
// the right one), while the correct emulation stays below TOL_CTX / 2 (measured: 1-2e-2). It
// also prints, for information only, how much P without the factor 256 would change O on
// peaked rows: ~4e-3 on these data, too little to assert on (the factor only matters for rows
// whose mass lies mostly far below their largest probability).
//
// Every GPU case runs the kernel twice (attention_fp8_set_persistent): one block per 128
// queries, compared with both references, and persistent CTAs, whose ctx and lse must have the
// very same bits (each work tile is computed the same way; the test_persistent_ cases have
// more work tiles than an H200 has SMs).
//
// ctx and lse are poisoned with NaN before each launch, and V^T's row padding (keys seq ..
// vt_row_stride - 1) with E4M3 NaN codes, so an element the kernel forgets to write, or a key
// it reads past seq, fails the comparison.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/tolerance.h"
#include "common/fp8/fp8_format.h"
#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu.h"
#include "kernels/attention/attention_fp8.h"
#include "kernels/attention/fp8_operand.h"
#include "reference/attention_reference.h"
#include "tests/test_util.h"

static const double TOL_CTX = 6e-2, TOL_LSE = 1e-4, TOL_EMULATED = 1e-2;
enum { D = 128, KEY_TILE = 128, WIDE_KEY_TILE = 192, CHUNK = 32 };  // the kernel's tile widths

// An E4M3 tensor on the host: its codes, its scale_inv, and the dequantised values.
typedef struct {
    uint8_t *codes;
    float *values;  // codes decoded times scale_inv
    float scale_inv;
} Fp8Tensor;

static Fp8Tensor quantise(const float *x, size_t n) {
    float amax = 0.0f;
    for (size_t i = 0; i < n; i++) amax = fmaxf(amax, fabsf(x[i]));
    const float scale = amax > 0.0f ? fp8_max(FP8_E4M3) / amax : 1.0f;
    Fp8Tensor t = {malloc(n), malloc(n * 4), 1.0f / scale};
    for (size_t i = 0; i < n; i++) {
        t.codes[i] = fp8_encode(x[i] * scale, FP8_E4M3);
        t.values[i] = fp8_decode(t.codes[i], FP8_E4M3) * t.scale_inv;
    }
    return t;
}

static void free_fp8(Fp8Tensor *t) { free(t->codes), free(t->values); }

// How P is rounded in the emulation: as the kernel (E4M3 of P * 256), without the factor 256,
// or as the kernel but with P's keys in the score accumulator's order (the planted bugs).
typedef enum { P_AS_KERNEL, P_WITHOUT_SCALE, P_KEYS_NOT_PERMUTED } PRounding;

// Key slot k of a 32-key chunk in the A operand holds key key_of_slot(k) when the permutation is
// left out: lane c's bytes 0-3 (slots 4c .. 4c + 3) hold its accumulator keys 2c, 2c + 1, 8 + 2c,
// 9 + 2c; slots 16 + 4c .. hold 16 + 2c, 17 + 2c, 24 + 2c, 25 + 2c.
static int key_of_slot(int k) {
    const int upper = k / 16, c = (k % 16) / 4, i = k % 4;
    return 16 * upper + 8 * (i / 2) + 2 * c + (i % 2);
}

// The kernel's arithmetic for one (b, h) on the host, in double except where the kernel rounds:
// keys in tiles of key_tile (the kernel's: 128 or 192), the running max m (log2 domain) over the tiles so far, P * 2^8 of tile
// t relative to that max rounded to E4M3, the output rescaled as the max grows; the row sum of
// the unrounded P. q, k, v: the dequantised values of [seq, batch, heads, D]. ctx likewise.
static void emulate_fp8_forward(const float *q, const float *k, const float *v, int seq, int batch, int heads,
                                int key_tile, PRounding rounding, float *ctx) {
    const double scale_log2 = 1.0 / sqrt((double)D) * 1.4426950408889634;
    const double p_factor = rounding == P_WITHOUT_SCALE ? 1.0 : 256.0;
    double *s = malloc((size_t)seq * sizeof(double)), acc[D];
    int slot_of_key[CHUNK];
    for (int k = 0; k < CHUNK; k++) slot_of_key[key_of_slot(k)] = k;
    for (int b = 0; b < batch; b++)
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < seq; i++) {
                const float *qi = q + (((int64_t)i * batch + b) * heads + h) * D;
                for (int j = 0; j < seq; j++) {
                    const float *kj = k + (((int64_t)j * batch + b) * heads + h) * D;
                    double dot = 0.0;
                    for (int c = 0; c < D; c++) dot += (double)qi[c] * kj[c];
                    s[j] = dot * scale_log2;
                }
                double m = -INFINITY, l = 0.0;
                memset(acc, 0, sizeof acc);
                for (int t0 = 0; t0 < seq; t0 += key_tile) {
                    const int t1 = t0 + key_tile < seq ? t0 + key_tile : seq;
                    double m_new = m;
                    for (int j = t0; j < t1; j++) m_new = fmax(m_new, s[j]);
                    const double alpha = exp2(m - m_new);
                    l *= alpha;
                    for (int c = 0; c < D; c++) acc[c] *= alpha;
                    m = m_new;
                    for (int j = t0; j < t1; j++) {
                        const double p = exp2(s[j] - m) * p_factor;
                        l += p;
                        const double p8 = fp8_decode(fp8_encode((float)p, FP8_E4M3), FP8_E4M3);
                        int key = j;  // the row of V that key j's probability multiplies
                        if (rounding == P_KEYS_NOT_PERMUTED) {
                            // It sits in the operand's slot slot_of_key[j % 32], which multiplies
                            // that row of the chunk (a row past seq: zeros in the kernel).
                            key = j - j % CHUNK + slot_of_key[j % CHUNK];
                            if (key >= seq) continue;
                        }
                        const float *vj = v + (((int64_t)key * batch + b) * heads + h) * D;
                        for (int c = 0; c < D; c++) acc[c] += p8 * vj[c];
                    }
                }
                float *out = ctx + (((int64_t)i * batch + b) * heads + h) * D;
                for (int c = 0; c < D; c++) out[c] = (float)(acc[c] / l);
            }
    free(s);
}

// The inputs of one case and the CPU's answers.
typedef struct {
    int seq, batch, heads;
    Fp8Tensor q, k, v;
    float *ref_ctx, *ref_lse, *emulated_ctx;
} Case;

// Q uniform in [-q_range, q_range): the larger, the wider the scores spread (2: standard
// deviation ~1.3 at d 128, the rows' softmax moderately peaked; 6: ~4, a few keys dominate and
// most probabilities lie far below the row's largest, where P's E4M3 rounding is coarsest).
static Case make_case(int seq, int batch, int heads, float q_range, int key_tile) {
    Case cs = {.seq = seq, .batch = batch, .heads = heads};
    const int64_t n = (int64_t)seq * batch * heads * D;
    // Different ranges, so that the three scales differ.
    float *q = random_floats(n, -q_range, q_range), *k = random_floats(n, -1.5f, 1.5f), *v = random_floats(n, -1.0f, 1.0f);
    cs.q = quantise(q, n), cs.k = quantise(k, n), cs.v = quantise(v, n);
    free(q), free(k), free(v);
    // The reference takes the fused [seq, batch, heads, 3 D] layout.
    float *qkv = malloc((size_t)n * 3 * 4);
    for (int64_t r = 0; r < n / D; r++) {
        memcpy(qkv + r * 3 * D, cs.q.values + r * D, D * 4);
        memcpy(qkv + r * 3 * D + D, cs.k.values + r * D, D * 4);
        memcpy(qkv + r * 3 * D + 2 * D, cs.v.values + r * D, D * 4);
    }
    cs.ref_ctx = malloc((size_t)n * 4), cs.ref_lse = malloc((size_t)seq * batch * heads * 4);
    ref_flash_attention_forward(qkv, seq, batch, heads, D, 0.0f, 0, 0, 0, 64, cs.ref_ctx, cs.ref_lse);
    free(qkv);
    cs.emulated_ctx = malloc((size_t)n * 4);
    emulate_fp8_forward(cs.q.values, cs.k.values, cs.v.values, seq, batch, heads, key_tile, P_AS_KERNEL,
                        cs.emulated_ctx);
    return cs;
}

static void free_case(Case *cs) {
    free_fp8(&cs->q), free_fp8(&cs->k), free_fp8(&cs->v);
    free(cs->ref_ctx), free(cs->ref_lse), free(cs->emulated_ctx);
}

static void *upload_bytes(const void *host, size_t bytes) {
    void *dev = dev_alloc(bytes);
    CUDA_CHECK(cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice));
    return dev;
}

// One case on the GPU, ctx in dtype dt, block_n keys per tile (attention_fp8_set_block_n; the
// emulation takes the same tiles).
static void run_case_tiles(int seq, int batch, int heads, DType dt, float q_range, int block_n) {
    SKIP_WITHOUT_GPU();
    SKIP_BELOW_CC(90, "the FP8 attention forward (wgmma)");
    if (!attention_fp8_available()) {
        print_message("[ SKIP     ] %s: this build holds no sm_90a code for the FP8 forward\n", __func__);
        skip();
    }
    print_message(" seed %llu: %s seq %d batch %d heads %d d %d, q in [-%g, %g), %d keys per tile\n",
                  (unsigned long long)test_seed(), dtype_name(dt), seq, batch, heads, D, q_range, q_range, block_n);
    Case cs = make_case(seq, batch, heads, q_range, block_n);
    const int previous_block_n = attention_fp8_set_block_n(block_n);
    const AttentionFp8Problem problem = {.seq = seq, .batch = batch, .heads = heads, .head_dim = D, .dtype = dt};
    assert_null(attention_fp8_unsupported(&problem));
    const int64_t n = (int64_t)seq * batch * heads * D, nlse = (int64_t)seq * batch * heads;
    const int64_t vt_row = attention_fp8_vt_row_stride(&problem);

    // V^T [batch, heads, D, vt_row]; the padding past seq holds E4M3 NaNs (0x7f), never to be read.
    uint8_t *vt = malloc((size_t)batch * heads * D * vt_row);
    memset(vt, 0x7f, (size_t)batch * heads * D * vt_row);
    for (int j = 0; j < seq; j++)
        for (int b = 0; b < batch; b++)
            for (int h = 0; h < heads; h++)
                for (int c = 0; c < D; c++)
                    vt[(((int64_t)b * heads + h) * D + c) * vt_row + j] = cs.v.codes[(((int64_t)j * batch + b) * heads + h) * D + c];
    const float scale_inv[3] = {cs.q.scale_inv, cs.k.scale_inv, cs.v.scale_inv};
    uint8_t *d_q = upload_bytes(cs.q.codes, n), *d_k = upload_bytes(cs.k.codes, n);
    uint8_t *d_vt = upload_bytes(vt, (size_t)batch * heads * D * vt_row);
    float *d_scale_inv = upload_bytes(scale_inv, sizeof scale_inv);
    void *d_ctx = dev_alloc(n * 2);
    float *d_lse = dev_alloc(nlse * 4);
    // Both launches (attention_fp8_set_persistent): one block per 128 queries, compared with the
    // references below, then persistent CTAs, which must give the very same bits.
    const int previous_persistent = attention_fp8_set_persistent(0);
    CUDA_CHECK(cudaMemset(d_ctx, 0xff, n * 2));  // NaN in fp16 and bf16
    CUDA_CHECK(cudaMemset(d_lse, 0xff, nlse * 4));
    attention_forward_fp8(&problem, d_q, d_k, d_vt, d_scale_inv, d_scale_inv + 1, d_scale_inv + 2, d_ctx, d_lse);
    CUDA_CHECK(cudaDeviceSynchronize());
    uint8_t *ctx_bits = malloc(n * 2), *lse_bits = malloc(nlse * 4);
    CUDA_CHECK(cudaMemcpy(ctx_bits, d_ctx, n * 2, cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(lse_bits, d_lse, nlse * 4, cudaMemcpyDeviceToHost));
    attention_fp8_set_persistent(1);
    void *d_ctx_persistent = dev_alloc(n * 2);
    float *d_lse_persistent = dev_alloc(nlse * 4);
    CUDA_CHECK(cudaMemset(d_ctx_persistent, 0xff, n * 2));
    CUDA_CHECK(cudaMemset(d_lse_persistent, 0xff, nlse * 4));
    attention_forward_fp8(&problem, d_q, d_k, d_vt, d_scale_inv, d_scale_inv + 1, d_scale_inv + 2, d_ctx_persistent,
                          d_lse_persistent);
    CUDA_CHECK(cudaDeviceSynchronize());
    attention_fp8_set_persistent(previous_persistent);
    attention_fp8_set_block_n(previous_block_n);
    uint8_t *ctx_bits_persistent = malloc(n * 2), *lse_bits_persistent = malloc(nlse * 4);
    CUDA_CHECK(cudaMemcpy(ctx_bits_persistent, d_ctx_persistent, n * 2, cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(lse_bits_persistent, d_lse_persistent, nlse * 4, cudaMemcpyDeviceToHost));
    int64_t ctx_differ = 0, lse_differ = 0;  // 16-bit elements of ctx, floats of lse, not bit-identical
    for (int64_t i = 0; i < n; i++) ctx_differ += memcmp(ctx_bits + 2 * i, ctx_bits_persistent + 2 * i, 2) != 0;
    for (int64_t i = 0; i < nlse; i++) lse_differ += memcmp(lse_bits + 4 * i, lse_bits_persistent + 4 * i, 4) != 0;
    print_message("  persistent CTAs vs one block per 128 queries: %lld of %lld ctx and %lld of %lld lse values differ "
                  "in their bits (must be 0)\n",
                  (long long)ctx_differ, (long long)n, (long long)lse_differ, (long long)nlse);

    float *got = malloc(n * 4), *got_lse = malloc(nlse * 4);
    dev_download(got, d_ctx, n, dt);
    dev_download_f32(got_lse, d_lse, nlse);
    // All three numbers first, so that a failing run still shows where it goes wrong: lse depends
    // only on S = Q K^T (Q's and K's copies, their descriptors, the descales, the softmax), ctx
    // also on P's permutation into the operand and on V^T's copies and descriptors.
    print_message("  lse vs float reference %.3e (tol %.1e); ctx vs float reference %.3e (tol %.1e), vs the "
                  "emulation %.3e (tol %.1e)\n",
                  rel_error(got_lse, cs.ref_lse, nlse), TOL_LSE, rel_error(got, cs.ref_ctx, n), TOL_CTX,
                  rel_error(got, cs.emulated_ctx, n), TOL_EMULATED);
    assert_rel_error(got_lse, cs.ref_lse, nlse, TOL_LSE);
    assert_rel_error(got, cs.ref_ctx, n, TOL_CTX);
    assert_rel_error(got, cs.emulated_ctx, n, TOL_EMULATED);
    assert_int_equal(ctx_differ, 0);
    assert_int_equal(lse_differ, 0);

    dev_free(d_q), dev_free(d_k), dev_free(d_vt), dev_free(d_scale_inv), dev_free(d_ctx), dev_free(d_lse);
    dev_free(d_ctx_persistent), dev_free(d_lse_persistent);
    free(vt), free(got), free(got_lse);
    free(ctx_bits), free(lse_bits), free(ctx_bits_persistent), free(lse_bits_persistent);
    free_case(&cs);
}

static void run_case(int seq, int batch, int heads, DType dt, float q_range) {
    run_case_tiles(seq, batch, heads, dt, q_range, KEY_TILE);
}

static void run_wide_case(int seq, int batch, int heads, DType dt, float q_range) {
    if (!attention_fp8_block_n_fits(WIDE_KEY_TILE)) {
        print_message("[ SKIP     ] %s: 192-key tiles take 2 or 3 stages, not ATTENTION_FP8_STAGES=4\n", __func__);
        skip();
    }
    run_case_tiles(seq, batch, heads, dt, q_range, WIDE_KEY_TILE);
}

static void test_seq128_fp16(void **state) { (void)state, run_case(128, 1, 2, DTYPE_FP16, 2.0f); }
static void test_seq128_bf16(void **state) { (void)state, run_case(128, 2, 2, DTYPE_BF16, 2.0f); }
static void test_ragged_seq129_fp16(void **state) { (void)state, run_case(129, 2, 3, DTYPE_FP16, 2.0f); }
static void test_ragged_seq129_bf16(void **state) { (void)state, run_case(129, 1, 4, DTYPE_BF16, 2.0f); }
static void test_seq1000_fp16(void **state) { (void)state, run_case(1000, 2, 2, DTYPE_FP16, 2.0f); }
static void test_seq1000_bf16(void **state) { (void)state, run_case(1000, 1, 3, DTYPE_BF16, 2.0f); }
static void test_seq2048_fp16(void **state) { (void)state, run_case(2048, 1, 2, DTYPE_FP16, 2.0f); }
static void test_seq2048_bf16(void **state) { (void)state, run_case(2048, 1, 2, DTYPE_BF16, 2.0f); }
// Peaked rows: most probabilities far below the row's largest (where the factor 256 matters).
static void test_peaked_seq1000_bf16(void **state) { (void)state, run_case(1000, 1, 2, DTYPE_BF16, 6.0f); }
// More work tiles (blocks of 128 queries of one head) than an H200 has SMs (132), so that the
// persistent CTAs each compute two or three of them in a row - the K/V ring's stages and
// parities running on from one work tile into the next (with 3 or 1 key tiles per work tile,
// an odd number, a work tile's first key tile lands in either stage of the default 2), Q
// reloaded while the consumers finish, the turns handed on between work tiles - at 1, 2, 3 and
// 8 key tiles per work tile, two of them ragged (keys and queries past seq in every head's
// last work tile). The cases above have fewer work tiles than SMs (one work tile per CTA).
static void test_persistent_ragged_seq300_bf16(void **state) { (void)state, run_case(300, 4, 24, DTYPE_BF16, 2.0f); }
static void test_persistent_ragged_seq129_fp16(void **state) { (void)state, run_case(129, 8, 20, DTYPE_FP16, 2.0f); }
static void test_persistent_seq1000_fp16(void **state) { (void)state, run_case(1000, 2, 9, DTYPE_FP16, 2.0f); }
static void test_persistent_seq128_bf16(void **state) { (void)state, run_case(128, 4, 70, DTYPE_BF16, 2.0f); }
// 192-key tiles (ATTENTION_FP8_BLOCK_N): seqs ragged against 192 - one tile shorter than 192
// (129: its second V^T panel partly past seq), a last tile of 1 key (193), of 108 keys (300:
// its second V^T panel would lie wholly past seq and is loaded from the tile's first key
// instead), of 40 (1000), of 128 (2048, peaked rows; the same as 300) - and
// one multiple of 192 (384); the persistent comparison in each, more work tiles than SMs in
// two. 192-key tiles do not fit 4 stages: under ATTENTION_FP8_STAGES=4 these cases skip.
static void test_wide_ragged_seq129_fp16(void **state) { (void)state, run_wide_case(129, 2, 3, DTYPE_FP16, 2.0f); }
static void test_wide_ragged_seq193_bf16(void **state) { (void)state, run_wide_case(193, 1, 4, DTYPE_BF16, 2.0f); }
static void test_wide_ragged_seq300_bf16(void **state) { (void)state, run_wide_case(300, 4, 24, DTYPE_BF16, 2.0f); }
static void test_wide_seq384_fp16(void **state) { (void)state, run_wide_case(384, 1, 2, DTYPE_FP16, 2.0f); }
static void test_wide_ragged_seq1000_fp16(void **state) { (void)state, run_wide_case(1000, 2, 9, DTYPE_FP16, 2.0f); }
static void test_wide_peaked_seq2048_bf16(void **state) { (void)state, run_wide_case(2048, 1, 2, DTYPE_BF16, 6.0f); }

// The comparison's power, on the CPU: the planted bugs' outputs miss the tolerances.
static void test_a_planted_bug_fails(void **state) {
    (void)state;
    // The permutation is a permutation: every key once per 32-key chunk.
    int seen[CHUNK] = {0};
    for (int k = 0; k < CHUNK; k++) seen[key_of_slot(k)]++;
    for (int k = 0; k < CHUNK; k++) assert_int_equal(seen[k], 1);
    const int seq = 200, batch = 1, heads = 2;
    const int64_t n = (int64_t)seq * batch * heads * D;
    Case cs = make_case(seq, batch, heads, 6.0f, KEY_TILE);  // peaked rows (make_case)
    // The correct emulation passes both comparisons, with room to spare.
    const double err_right = rel_error(cs.emulated_ctx, cs.ref_ctx, n);
    print_message("  emulated kernel vs float reference: rel.err %.3e (tol %.1e)\n", err_right, TOL_CTX);
    assert_true(err_right < TOL_CTX / 2);
    float *bad = malloc(n * 4);
    emulate_fp8_forward(cs.q.values, cs.k.values, cs.v.values, seq, batch, heads, KEY_TILE, P_KEYS_NOT_PERMUTED, bad);
    const double err_perm = rel_error(bad, cs.ref_ctx, n);
    print_message("  P's keys not permuted:  rel.err %.3e against the reference, must exceed %.1e\n", err_perm, TOL_CTX);
    assert_true(err_perm > 4 * TOL_CTX);
    emulate_fp8_forward(cs.q.values, cs.k.values, cs.v.values, seq, batch, heads, KEY_TILE, P_WITHOUT_SCALE, bad);
    const double err_scale = rel_error(bad, cs.emulated_ctx, n);
    print_message("  (information) P without the factor 256: rel.err %.3e against the emulation\n", err_scale);
    free(bad);
    free_case(&cs);
}

// The kernel's accumulator -> operand permutation (fp8_operand.h), replayed on the host for one
// warp and one 32-key chunk, exactly as probabilities_to_operand in flash_forward_fp8.cu runs it
// (packing, the two sends, the shuffles as reads of another lane's word, the byte permutes):
// every byte of every lane's four operand registers must hold the code of the (row, key) that
// the e4m3 A operand's layout puts there. The codes name their place: key | (row is g + 8) << 5.
static uint8_t code_of(int upper_row, int key) { return (uint8_t)(key | upper_row << 5); }

static void test_operand_permutation(void **state) {
    (void)state;
    uint32_t first[2][32], second[2][32];  // [half][lane]: the words each lane sends
    for (int lane = 0; lane < 32; lane++) {
        const int c = lane % 4;
        const Fp8OperandLanes pl = fp8_operand_lanes(lane);
        for (int half = 0; half < 2; half++) {
            uint32_t row[2];  // rows g and g + 8: the pairs of chunks j0 = 2 half (low) and j1 (high)
            for (int r = 0; r < 2; r++) {
                uint32_t pair[2];
                for (int jj = 0; jj < 2; jj++) {
                    const int key = 8 * (2 * half + jj) + 2 * c;  // the accumulator's keys 8 j + 2c, + 1
                    pair[jj] = code_of(r, key) | (uint32_t)code_of(r, key + 1) << 8;
                }
                row[r] = pair[0] | pair[1] << 16;
            }
            first[half][lane] = fp8_byte_perm(row[0], row[1], pl.send_first);
            second[half][lane] = fp8_byte_perm(row[0], row[1], pl.send_second);
        }
    }
    for (int lane = 0; lane < 32; lane++) {
        const int c = lane % 4;
        const Fp8OperandLanes pl = fp8_operand_lanes(lane);
        assert_int_equal(pl.src_first / 4, lane / 4);  // shuffles stay within the quad (same rows)
        assert_int_equal(pl.src_second / 4, lane / 4);
        for (int half = 0; half < 2; half++) {
            const uint32_t x = first[half][pl.src_first], y = second[half][pl.src_second];
            const uint32_t a[2] = {fp8_byte_perm(x, y, pl.order_g), fp8_byte_perm(x, y, pl.order_g8)};
            // a[0] is register 2 half (row g), a[1] register 2 half + 1 (row g + 8): byte i holds
            // key 16 half + 4c + i.
            for (int r = 0; r < 2; r++)
                for (int i = 0; i < 4; i++) {
                    const int want = code_of(r, 16 * half + 4 * c + i), got = (a[r] >> (8 * i)) & 0xff;
                    if (got != want)
                        fail_msg("lane %d register %d byte %d: code %#x (key %d, row g%s), want key %d", lane,
                                 2 * half + r, i, got, got & 31, got >> 5 ? " + 8" : "", 16 * half + 4 * c + i);
                }
        }
    }
}

// The problems the kernel refuses (no GPU needed).
static void test_unsupported(void **state) {
    (void)state;
    AttentionFp8Problem p = {.seq = 129, .batch = 2, .heads = 2, .head_dim = D, .dtype = DTYPE_BF16};
    assert_null(attention_fp8_unsupported(&p));
    assert_int_equal(attention_fp8_vt_row_stride(&p), 144);
    p.head_dim = 64;
    assert_non_null(attention_fp8_unsupported(&p));
    p.head_dim = D, p.causal = 1;
    assert_non_null(attention_fp8_unsupported(&p));
    p.causal = 0, p.vt_row_stride = 136;  // not a multiple of 16
    assert_non_null(attention_fp8_unsupported(&p));
    p.vt_row_stride = 128;  // < seq
    assert_non_null(attention_fp8_unsupported(&p));
    p.vt_row_stride = 256;
    assert_null(attention_fp8_unsupported(&p));
    p.seq = 0;
    assert_non_null(attention_fp8_unsupported(&p));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unsupported),       cmocka_unit_test(test_operand_permutation),
        cmocka_unit_test(test_a_planted_bug_fails),
        cmocka_unit_test(test_seq128_fp16),       cmocka_unit_test(test_seq128_bf16),
        cmocka_unit_test(test_ragged_seq129_fp16), cmocka_unit_test(test_ragged_seq129_bf16),
        cmocka_unit_test(test_seq1000_fp16),      cmocka_unit_test(test_seq1000_bf16),
        cmocka_unit_test(test_seq2048_fp16),      cmocka_unit_test(test_seq2048_bf16),
        cmocka_unit_test(test_peaked_seq1000_bf16),
        cmocka_unit_test(test_persistent_ragged_seq300_bf16), cmocka_unit_test(test_persistent_ragged_seq129_fp16),
        cmocka_unit_test(test_persistent_seq1000_fp16),       cmocka_unit_test(test_persistent_seq128_bf16),
        cmocka_unit_test(test_wide_ragged_seq129_fp16),       cmocka_unit_test(test_wide_ragged_seq193_bf16),
        cmocka_unit_test(test_wide_ragged_seq300_bf16),       cmocka_unit_test(test_wide_seq384_fp16),
        cmocka_unit_test(test_wide_ragged_seq1000_fp16),      cmocka_unit_test(test_wide_peaked_seq2048_bf16),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
