// One matrix product on cuBLASLt, with its epilogue, its algorithm chosen once per shape.
//
// Everything here is in cuBLASLt's own (column-major) terms: D = alpha op(A) op(B) + beta C,
// D is m x n. The modules (linear.c) translate their row-major products into these terms.
//
// Why cuBLASLt rather than cublasGemmEx: its epilogues run inside the GEMM's last stage,
// on the tile while it is still in registers. Adding a bias, applying GELU (and keeping
// its input for backward), or summing a bias gradient then costs no extra pass over
// device memory - the first kind of fusion this course shows. (Whether that pays at a given
// shape is measured, not assumed: modules/linear.h's EPILOGUE_<KIND>=kernel switch and
// //modules:epilogue_bench run the same work as a plain GEMM and kernels of its own.)
#ifndef MODULES_GEMM_H
#define MODULES_GEMM_H

#include <cublasLt.h>
#include <cuda_runtime_api.h>  // cudaStream_t (GemmStream)
#include <stdint.h>

#include "common/core/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    GEMM_EPILOGUE_NONE,       // D = AB (+ C)
    GEMM_EPILOGUE_BIAS,       // D = AB + bias[row]                          (bias: m values)
    GEMM_EPILOGUE_GELU_AUX_BIAS,  // aux = AB + bias[row]; D = GELU(aux)   (aux: m x n, ld aux_ld)
    GEMM_EPILOGUE_DGELU_BGRAD,    // D = AB * GELU'(aux); bias = sum over columns of D
    GEMM_EPILOGUE_DGELU,      // D = AB * GELU'(aux)                        (aux as above)
    GEMM_EPILOGUE_BGRADB,     // D = AB; bias = sum of B over the k dimension (n values)
} GemmEpilogue;

typedef struct {
    int trans_a, trans_b;  // 1: op(X) = X^T
    int64_t m, n, k;
    const void *a;
    int64_t lda;
    const void *b;
    int64_t ldb;
    const void *c;  // added with beta = 1 when not NULL (a residual); ldc = ldd
    void *d;
    int64_t ldd;
    GemmEpilogue epilogue;
    void *bias;  // bias (read) or bias gradient (written), per the epilogue
    void *aux;   // GELU's input (written by GELU_AUX_BIAS, read by DGELU(_BGRAD))
    int64_t aux_ld;
    DType dtype;  // of A, B, C, D, bias and aux; accumulation is float32
} Gemm;

// Runs the product on the default stream, with the shared cuBLASLt workspace (gpu_workspace).
void gemm_run(const Gemm *g);

// ---- a product on another stream (issue 21: work that could overlap) ----------------------
// Where a product runs: a CUDA stream and a cuBLASLt workspace of its own. Two products that
// may run at the same time must never share a workspace (cuBLASLt keeps split-K partial sums
// and counters there), so every stream other than the default one brings its own.
typedef struct {
    cudaStream_t stream;
    void *workspace;         // device, workspace_bytes
    size_t workspace_bytes;  // at least gpu_workspace's size (the size every plan is chosen for)
} GemmStream;

// A non-blocking stream (cudaStreamNonBlocking: no implicit synchronisation with the legacy
// default stream, which all our other work uses) at normal priority - the default stream's -
// or, with high_priority, at the device's highest (the block scheduler then prefers its
// blocks; step 07's collectives use that), and a workspace of gpu_workspace's size, so that a
// product planned on either stream gets the same algorithm and the same bits.
void gemm_stream_init(GemmStream *s, int high_priority);
// Waits for the stream's work, then frees the stream and its workspace.
void gemm_stream_free(GemmStream *s);
// gemm_run on `where`'s stream and workspace (NULL: exactly gemm_run). The plan - algorithm
// included - is the one gemm_run would use for the same Gemm (the cache does not look at the
// stream), so the result has the same bits. The call only enqueues: the caller orders it
// (events) after the work that writes A, B, C, aux and before any that reads D or the bias
// gradient or overwrites the inputs. Under autotuning (gemm_autotune), the first call of a
// shape times its candidates on this stream, and waits for them on the host; they are then
// timed beside whatever the other streams run, so the pick (and the bits) may differ from a
// one-stream run's (not under gemm_set_deterministic, which turns autotuning off).
void gemm_run_on(const Gemm *g, const GemmStream *where);

// ---- products that share the GPU with other kernels -----------------------------------------
// Plans made from now on are chosen for `sms` multiprocessors (cuBLASLt's
// CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET; 0: the device's count, the default), as Transformer
// Engine does for the GEMMs it runs beside communication (its math_sm_count). Why it matters:
// cuBLASLt's Hopper kernels are often persistent - one CTA per SM, each taking a fixed share of
// the tiles - so when a collective's CTAs hold some SMs, the GEMM's CTAs that find no SM wait
// for the collective to end and their share of the tiles ends that much later. Planned for the
// SMs left, every CTA starts at once. The target is part of a plan's key (a shape planned both
// ways has two plans); it is ignored under gemm_set_deterministic(1), so that a schedule that
// overlaps and one that does not give the same bits.
void gemm_set_sm_count_target(int sms);

// Which algorithm a shape gets when it is first seen. 0: cuBLASLt's heuristic's first choice;
// 1: time the heuristic's candidates on the real operands and keep the fastest ("autotuning").
// -1 (the default): what the environment says, GEMM_AUTOTUNE=1 or 0, else 0 - so any step can
// be timed both ways, `GEMM_AUTOTUNE=1 step04_transformer_layer`, as TE exposes its knobs.
// Off by default: on the H100, step 04 was faster with the heuristic's choices in each of 5
// paired runs (docs/results.md); the timing of single candidates picked worse ones.
extern int gemm_autotune;
// Checks GEMM_AUTOTUNE's value now (1, 0 or unset; anything else stops with a message), so that
// a program refuses a bad value before it looks for a GPU.
void gemm_require_valid_switches(void);
// Forget every plan (the next call of each shape plans again).
void gemm_clear_plans(void);

// Bit-reproducible products (LayerConfig.deterministic, `--deterministic`; for the whole
// process, as PyTorch's torch.use_deterministic_algorithms). cuBLAS gives the same bits on
// every run of one algorithm on one GPU model (its documentation: same architecture, same
// number of SMs, one stream), so what can vary is the choice of algorithm and how a split-K
// algorithm adds its parts. When on, the shapes planned from then on:
//  - exclude the "in place" split-K reduction (CUBLASLT_REDUCTION_SCHEME_INPLACE: the parts
//    added in the output buffer, their order kept by counters in the workspace) from the
//    heuristic's candidates; the other schemes add the parts in a separate, fixed pass;
//  - take the heuristic's first choice even under GEMM_AUTOTUNE=1: the fastest candidate by
//    timing can differ from run to run, and two algorithms need not round alike.
// The FP8 products (fp8_gemm.h) follow the same switch. Off by default.
void gemm_set_deterministic(int on);
int gemm_deterministic(void);
// The cuBLASLt reduction schemes (cublasLtReductionScheme_t bits, for
// CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK) a product may use now: all but INPLACE when
// deterministic, else all (CUBLASLT_REDUCTION_SCHEME_MASK).
uint32_t gemm_reduction_schemes(void);
// Stops (DIE) if `algo`, as chosen by the heuristic (or the autotuner, among its candidates),
// sums its split-K parts by a scheme gemm_reduction_schemes() excludes: the check that
// cuBLASLt honoured the preference.
void gemm_require_reduction_scheme(const cublasLtMatmulAlgo_t *algo);

// How many distinct shapes have been planned so far, and how many calls found their plan in
// the cache (for tests and curiosity).
void gemm_cache_stats(int *plans, long *hits);

#ifdef __cplusplus
}
#endif

#endif  // MODULES_GEMM_H
