// The layer every step computes: its configuration, its 12 parameters (named as in the
// PyTorch quickstart's state_dict), and the host-side buffers for inputs and results.
//
//   x: [seq, batch, hidden]
//   a    = LayerNorm1(x)
//   qkv  = a @ W_qkv^T + b_qkv            viewed as [seq, batch, heads, 3*d]: per head [q | k | v]
//   ctx  = softmax(q k^T / sqrt(d)) v     per (batch, head), dropout on the probabilities
//   y    = x + Dropout(ctx @ W_proj^T + b_proj)
//   out  = y + FC2(GELU_tanh(FC1(LayerNorm2(y))))
//
// Host buffers are float32, row-major. Every step stores its tensors on the GPU in fp16 or
// bf16; values given to the GPU are first rounded to that type on the host
// (round_to_dtype), so the CPU reference starts from exactly the numbers the GPU sees.
#ifndef COMMON_CORE_LAYER_H
#define COMMON_CORE_LAYER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { DTYPE_FP16 = 0, DTYPE_BF16 = 1 } DType;

const char *dtype_name(DType dtype);  // "fp16" or "bf16"
// The largest finite value of a dtype: 65504 (fp16), about 3.39e38 (bf16).
double dtype_max(DType dtype);
// The index of the first value in x[0..n) that is not finite or rounds to an infinity in
// `dtype` (fp16: |x| >= 65520), or -1 if every value fits.
int64_t first_value_outside_dtype(const float *x, int64_t n, DType dtype);

typedef struct {
    int hidden;            // h
    int ffn;               // FC1's output width
    int heads;             // attention heads; head_dim = hidden / heads
    int seq;               // s
    int batch;             // b
    DType dtype;           // storage type on the GPU
    float attn_dropout;    // drop probability on the attention probabilities
    float hidden_dropout;  // drop probability after the projection
    float eps;             // LayerNorm epsilon
    int causal;            // 1: query i attends to keys 0..i only
    uint64_t seed;         // dropout masks and random initialisation
    // 1: bit-reproducible training steps (`--deterministic`): every sum over a parallel split
    // in a fixed order - attention's dQ (AttentionProblem.deterministic), the cuBLASLt
    // algorithms (gemm_set_deterministic) - at some cost in time and memory. 0: the fast path.
    int deterministic;
} LayerConfig;

// The quickstart's configuration: hidden 4096, ffn 16384, heads 32, seq 2048, batch 4, fp16.
LayerConfig layer_config_quickstart(void);
// Looks up a preset by name ("quickstart", "small", "tiny"); returns 0 if unknown.
int layer_config_preset(const char *name, LayerConfig *out);
// NULL if the configuration is valid, else a message saying what is wrong with it: sizes
// (positive; hidden divisible by heads; hidden and ffn multiples of 8; seq * batch at most
// LAYER_MAX_TOKENS), dropout probabilities (dropout_problem), eps.
const char *layer_config_problem(const LayerConfig *cfg);

// seq * batch at most 2^31 - 1: cuBLAS takes 32-bit sizes, and the kernels launch one block
// per token row (a grid's x dimension is at most 2^31 - 1).
#define LAYER_MAX_TOKENS 2147483647LL

// Dropout draws one random byte per element (common/core/philox.h), so the probability it
// uses is a multiple of 1/256: dropout_used(p) = round(256 p) / 256. A probability that this
// changes by more than DROPOUT_MAX_CHANGE (relative), in the drop probability p or in the
// keep probability 1 - p, is refused: 0.1 runs as 26/256 = 0.1016 (1.6% more drops), but
// 0.001 would run as 0 (no dropout at all) and 0.999 as 0.996 (keeping 3.9x as many).
#define DROPOUT_MAX_CHANGE 0.05
double dropout_used(float p);
// NULL if p can be used (it is 0, or within DROPOUT_MAX_CHANGE as above), else why not.
const char *dropout_problem(float p);

// Host memory a run needs at least, in bytes: the parameters, the inputs and one set of
// results (gradients, out, dx) as float32, and with `check` the CPU reference's second set
// of results and the activations it keeps for the backward (including the attention
// probabilities, [batch, heads, seq, seq]). A lower bound: the refusal it backs is never wrong.
double layer_host_bytes(const LayerConfig *cfg, int check);

static inline int layer_head_dim(const LayerConfig *c) { return c->hidden / c->heads; }
static inline int64_t layer_tokens(const LayerConfig *c) { return (int64_t)c->seq * c->batch; }

// Model FLOPs of one training step (forward + backward): 3x the forward's matrix products
// (linears and attention's two batched products), halved for attention when causal.
double layer_train_flops(const LayerConfig *cfg);

enum ParamId {
    P_LN1_WEIGHT,
    P_LN1_BIAS,
    P_QKV_WEIGHT,
    P_QKV_BIAS,
    P_PROJ_WEIGHT,
    P_PROJ_BIAS,
    P_LN2_WEIGHT,
    P_LN2_BIAS,
    P_FC1_WEIGHT,
    P_FC1_BIAS,
    P_FC2_WEIGHT,
    P_FC2_BIAS,
    NUM_PARAMS
};

extern const char *const PARAM_NAMES[NUM_PARAMS];  // "ln1.weight", ...

// Shape of a parameter (PyTorch layout: Linear weight [out, in]); returns ndim (1 or 2).
int param_shape(const LayerConfig *cfg, int id, int64_t shape[2]);
int64_t param_numel(const LayerConfig *cfg, int id);

typedef struct {
    float *tensor[NUM_PARAMS];
} LayerParams;

void layer_params_alloc(const LayerConfig *cfg, LayerParams *p);  // zero-filled
void layer_params_free(LayerParams *p);
// Like PyTorch's defaults plus a little noise on the LayerNorms so that their affine
// parameters are exercised: W, b ~ U(-1/sqrt(in), 1/sqrt(in)), gamma ~ 1 + U(-0.1, 0.1),
// beta ~ U(-0.1, 0.1). Deterministic in `seed`.
void layer_params_init_random(const LayerConfig *cfg, uint64_t seed, LayerParams *p);

typedef struct {
    float *x;   // [seq, batch, hidden]
    float *dy;  // gradient arriving at the output, same shape
} LayerInputs;

void layer_inputs_alloc(const LayerConfig *cfg, LayerInputs *in);
void layer_inputs_free(LayerInputs *in);
// x, dy ~ U(0, 1), as the quickstart's torch.rand. Deterministic in `seed`.
void layer_inputs_init_random(const LayerConfig *cfg, uint64_t seed, LayerInputs *in);

typedef struct {
    float *out;         // [seq, batch, hidden]
    float *dx;          // [seq, batch, hidden]
    LayerParams grad;   // one gradient per parameter, same shapes
} LayerResults;

void layer_results_alloc(const LayerConfig *cfg, LayerResults *r);
void layer_results_free(LayerResults *r);

// Round every value to the nearest fp16/bf16 and back, in place.
void round_to_dtype(float *x, int64_t n, DType dtype);
void layer_params_round(const LayerConfig *cfg, LayerParams *p);
void layer_inputs_round(const LayerConfig *cfg, LayerInputs *in);
// The random problem every check and timing uses: parameters drawn from cfg->seed and inputs
// from cfg->seed + 1 (layer_*_init_random), each allocated here and rounded to cfg->dtype.
// Free with layer_params_free and layer_inputs_free.
void layer_problem_init_random(const LayerConfig *cfg, LayerParams *p, LayerInputs *in);

// Fill with uniform values in [lo, hi) from a Philox stream keyed by (seed, stream).
void fill_uniform(float *x, int64_t n, float lo, float hi, uint64_t seed, uint64_t stream);

#ifdef __cplusplus
}
#endif

#endif  // COMMON_CORE_LAYER_H
