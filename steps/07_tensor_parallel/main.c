// Step 07: tensor parallelism over NCCL, one process per GPU.
//
// What runs on the GPUs: the whole layer of step 04, Megatron-style, forward and backward,
//
//   y   = x + dropout(Proj(Attn(QKV(LN1(x)))))   QKV column-parallel (this rank's heads),
//                                                attention on those heads only, Proj
//                                                row-parallel: one all-reduce forward (Proj's
//                                                partial outputs), one backward (LN1's partial
//                                                input gradient)
//   out = y + FC2(GELU(FC1(LN2(y))))             FC1 column-parallel (ffn/tp outputs per rank),
//                                                FC2 row-parallel: the same two all-reduces
//
// built from step 02's modules (Linear, LayerNorm on cuBLASLt), step 04's flash attention
// and fused elementwise kernels (bias-dropout-add, GELU), and step 01's bias-gradient and
// bias kernels (for the split LayerNorm block). The attention dropout is
// drawn with each head's index in the whole layer, so every tp draws the unsharded mask.
//
// With --block local|exact it runs instead this step's own block, Linear -> LayerNorm ->
// Linear, with the LayerNorm over the features the column-parallel Linear has split (see the
// chapter: shard-local statistics or exact ones through an all-reduce of 2 floats per token).
//
// Then the all-reduce itself, timed alone at the sizes the layer sends, with the bus
// bandwidth 2 (n - 1) / n * bytes / time (what a ring all-reduce moves per GPU).
//
//   ./tp --tp 2 --preset small --check     fork 2 ranks on this node, compare with the CPU
//   mpirun -np 8 ./tp                      one rank per process (NCCL_COMM_ID must be set)
#define _POSIX_C_SOURCE 200809L
#include <cuda_runtime.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/core/errors.h"
#include "common/core/tolerance.h"
#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu.h"
#include "common/core/layer.h"
#include "modules/gemm.h"
#include "modules/layernorm.h"
#include "modules/linear.h"
#include "common/gpu/nccl_check.h"
#include "reference/reference.h"
#include "common/core/philox.h"
#include "reference/tp_reference.h"
#include "common/io/weights_io.h"
#include "kernels/attention/flash_attention.h"
#include "kernels/fused/elementwise.h"
#include "kernels/naive/bias.h"
#include "steps/07_tensor_parallel/split_layernorm.h"
#include "steps/07_tensor_parallel/tp_comm.h"

typedef struct {
    LayerConfig cfg;
    int tp;  // --tp N: fork N local ranks (0: take the ranks from the environment)
    int port, warmup, iters, check, sweep;
    double timeout_s;
    const char *weights_path;  // unsharded (tp = 1) parameters; NULL: random
    int block;                 // --block: the Linear -> LayerNorm -> Linear block instead
    TpLnMode ln_mode;          // its LayerNorm: shard-local or exact
} Args;

static void usage(void) {
    printf("usage: tp [--tp N] [--preset quickstart|small|tiny] [--dtype fp16|bf16]\n"
           "          [--iters N] [--warmup N] [--check] [--no-sweep] [--port P] [--timeout S]\n"
           "          [--weights FILE] [--block local|exact]\n"
           "  --tp N      fork N ranks on this node (one per GPU); without it the rank and world\n"
           "              size come from mpirun / srun / RANK,WORLD_SIZE and NCCL_COMM_ID\n"
           "  --check     compare every rank's results (out, dx, its gradient shards) with the\n"
           "              CPU reference (use --preset small)\n"
           "  --no-sweep  skip the all-reduce bandwidth table\n"
           "  --timeout S seconds any rank waits for its peers before aborting (default 120)\n"
           "  --weights F the layer's unsharded parameters (safetensors, PyTorch names); each\n"
           "              rank keeps its shard (default: random)\n"
           "  --block M   run the block Linear(h->ffn) -> LayerNorm(ffn) -> Linear(ffn->h) instead,\n"
           "              its LayerNorm shard-local (a GroupNorm: not the unsharded function) or\n"
           "              exact (statistics all-reduced, 2 floats per token)\n");
}

static int parse_int(const char *flag, const char *v, int lo, int hi) {
    char *end;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || *end || x < lo || x > hi) fail_user("%s needs an integer in %d..%d (got %s)", flag, lo, hi, v ? v : "nothing");
    return (int)x;
}

static void parse_args(int argc, char **argv, Args *a) {
    memset(a, 0, sizeof *a);
    a->cfg = layer_config_quickstart();
    a->port = 29500 + (int)(getpid() % 1000), a->warmup = 3, a->iters = 10, a->sweep = 1;
    a->timeout_s = 120.0;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) usage(), exit(0);
        else if (!strcmp(f, "--check")) a->check = 1;
        else if (!strcmp(f, "--no-sweep")) a->sweep = 0;
        else if (!strcmp(f, "--tp")) a->tp = parse_int(f, v, 1, TP_MAX_RANKS), i++;
        else if (!strcmp(f, "--port")) a->port = parse_int(f, v, 1024, 65535), i++;
        else if (!strcmp(f, "--iters")) a->iters = parse_int(f, v, 1, 100000), i++;
        else if (!strcmp(f, "--warmup")) a->warmup = parse_int(f, v, 0, 100000), i++;
        else if (!strcmp(f, "--timeout")) a->timeout_s = parse_int(f, v, 1, 86400), i++;
        else if (!strcmp(f, "--block")) {
            if (v && !strcmp(v, "local")) a->ln_mode = TP_LN_SHARD_LOCAL;
            else if (v && !strcmp(v, "exact")) a->ln_mode = TP_LN_EXACT;
            else fail_user("--block must be local or exact");
            a->block = 1, i++;
        } else if (!strcmp(f, "--weights")) {
            if (!v) fail_user("--weights needs a file");
            a->weights_path = v, i++;
        }
        else if (!strcmp(f, "--preset")) {
            if (!v || !layer_config_preset(v, &a->cfg)) fail_user("--preset: unknown preset '%s'", v ? v : "");
            i++;
        } else if (!strcmp(f, "--dtype")) {
            if (v && !strcmp(v, "fp16")) a->cfg.dtype = DTYPE_FP16;
            else if (v && !strcmp(v, "bf16")) a->cfg.dtype = DTYPE_BF16;
            else fail_user("--dtype must be fp16 or bf16");
            i++;
        } else fail_user("unknown flag '%s' (see --help)", f);
    }
    const char *problem = layer_config_problem(&a->cfg);
    if (problem) fail_user("%s", problem);
    if (a->check && (double)layer_tokens(&a->cfg) * a->cfg.hidden * a->cfg.ffn > 1e10)
        fail_user("--check runs the CPU reference, which would take hours at this size: add --preset small");
}

// ---- All-reduces, timed ------------------------------------------------------------------------
static ncclDataType_t nccl_type(DType d) { return d == DTYPE_BF16 ? ncclBfloat16 : ncclHalf; }

// Every all-reduce of a step, bracketed by events so that its share of the step can be
// measured. (The events also count the time a rank waits for the slowest peer to arrive:
// that is part of what tensor parallelism costs.) One per process: the step is sequential.
#define MAX_ALL_REDUCES 8
static struct {
    cudaEvent_t start[MAX_ALL_REDUCES], stop[MAX_ALL_REDUCES];
    int count;     // all-reduces so far in this step
    double bytes;  // and their payload
    cudaStream_t side;             // the stream of the overlapped all-reduces
    cudaEvent_t ready, reduced;    // side waits for `ready`; the main stream for `reduced`
} timer;

static void timer_init(void) {
    for (int i = 0; i < MAX_ALL_REDUCES; i++) {
        CUDA_CHECK(cudaEventCreate(&timer.start[i]));
        CUDA_CHECK(cudaEventCreate(&timer.stop[i]));
    }
    // Non-blocking: no implicit synchronisation with the default stream, where the layer runs.
    CUDA_CHECK(cudaStreamCreateWithFlags(&timer.side, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreateWithFlags(&timer.ready, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&timer.reduced, cudaEventDisableTiming));
}

static void timer_free(void) {
    for (int i = 0; i < MAX_ALL_REDUCES; i++) cudaEventDestroy(timer.start[i]), cudaEventDestroy(timer.stop[i]);
    cudaStreamDestroy(timer.side);
    cudaEventDestroy(timer.ready), cudaEventDestroy(timer.reduced);
}

// Milliseconds spent in this step's all-reduces (after the step has been synchronised).
static double timer_ms(void) {
    double total = 0.0;
    for (int i = 0; i < timer.count; i++) {
        float ms;
        CUDA_CHECK(cudaEventElapsedTime(&ms, timer.start[i], timer.stop[i]));
        total += ms;
    }
    return total;
}

static void timed_all_reduce_on(TpComm *comm, void *buf, size_t count, ncclDataType_t type, size_t elem_bytes,
                                cudaStream_t stream) {
    if (comm->world == 1) return;
    if (timer.count == MAX_ALL_REDUCES) DIE("more than %d all-reduces in a step", MAX_ALL_REDUCES);
    CUDA_CHECK(cudaEventRecord(timer.start[timer.count], stream));
    tp_all_reduce(comm, buf, count, type, stream);
    CUDA_CHECK(cudaEventRecord(timer.stop[timer.count], stream));
    timer.count++;
    timer.bytes += (double)count * elem_bytes;
}

// An all-reduce the layer waits for at once (forward: the next op needs the sum).
static void timed_all_reduce(TpComm *comm, void *buf, size_t count, ncclDataType_t type, size_t elem_bytes) {
    timed_all_reduce_on(comm, buf, count, type, elem_bytes, 0);
}

// Backward's all-reduces overlap with work that does not need them: the partial input
// gradient of a column-parallel Linear is summed on a side stream while the same Linear's
// weight-gradient GEMM runs (Megatron-LM's overlap of the input-gradient all-reduce).
//   all_reduce_start(buf)   after the input-gradient GEMM that wrote buf
//   ... independent work on the default stream ...
//   all_reduce_finish()     before anything reads buf
static void all_reduce_start(TpComm *comm, void *buf, size_t count, ncclDataType_t type, size_t elem_bytes) {
    if (comm->world == 1) return;
    CUDA_CHECK(cudaEventRecord(timer.ready, 0));
    CUDA_CHECK(cudaStreamWaitEvent(timer.side, timer.ready, 0));
    timed_all_reduce_on(comm, buf, count, type, elem_bytes, timer.side);
    CUDA_CHECK(cudaEventRecord(timer.reduced, timer.side));
}

static void all_reduce_finish(TpComm *comm) {
    if (comm->world == 1) return;
    CUDA_CHECK(cudaStreamWaitEvent(0, timer.reduced, 0));
}

// ---- The attention half of the layer on one rank --------------------------------------------
typedef struct {
    LayerConfig cfg;
    int hl, heads_local, first_head;  // this rank's share of hidden (= its heads * d), its heads
    int64_t T;
    LayerNorm ln1;         // replicated: every rank normalises the whole x
    Linear qkv;            // rows [3h r/tp, 3h (r+1)/tp) of W_qkv, b_qkv: this rank's heads
    Linear proj;           // columns [h r/tp, h (r+1)/tp) of W_proj, no bias: added after the sum
    void *b_proj, *db_proj;  // replicated
    void *ln_out, *qkv_out, *ctx, *proj_out, *y, *d_proj, *d_ctx, *d_qkv, *d_ln, *dx;
    float *lse;
    void *attn_scratch;
} TpAttention;

static void tp_attention_init(TpAttention *m, const LayerConfig *c, int tp, int rank, const LayerParams *shard) {
    memset(m, 0, sizeof *m);
    m->cfg = *c;
    m->heads_local = c->heads / tp, m->first_head = rank * m->heads_local;
    m->hl = c->hidden / tp, m->T = layer_tokens(c);
    const int h = c->hidden, d = layer_head_dim(c);
    float *const *w = shard->tensor;
    layernorm_init(&m->ln1, h, m->T, c->eps, w[P_LN1_WEIGHT], w[P_LN1_BIAS], c->dtype);
    linear_init(&m->qkv, h, 3 * m->hl, w[P_QKV_WEIGHT], w[P_QKV_BIAS], c->dtype);
    linear_init(&m->proj, m->hl, h, w[P_PROJ_WEIGHT], NULL, c->dtype);
    m->b_proj = dev_upload(w[P_PROJ_BIAS], h, c->dtype);
    m->db_proj = dev_alloc((size_t)h * dtype_bytes(c->dtype));
    const size_t e = dtype_bytes(c->dtype), th = (size_t)m->T * h * e, tl = (size_t)m->T * m->hl * e;
    m->ln_out = dev_alloc(th), m->proj_out = dev_alloc(th), m->y = dev_alloc(th), m->d_proj = dev_alloc(th);
    m->d_ln = dev_alloc(th), m->dx = dev_alloc(th);
    m->qkv_out = dev_alloc(3 * tl), m->d_qkv = dev_alloc(3 * tl), m->ctx = dev_alloc(tl), m->d_ctx = dev_alloc(tl);
    m->lse = dev_alloc((size_t)c->batch * m->heads_local * c->seq * sizeof(float));
    m->attn_scratch = dev_alloc(flash_attention_backward_scratch_bytes(c->seq, c->batch, m->heads_local, d));
}

static void tp_attention_free(TpAttention *m) {
    layernorm_free(&m->ln1), linear_free(&m->qkv), linear_free(&m->proj);
    void *bufs[] = {m->b_proj, m->db_proj, m->ln_out, m->qkv_out, m->ctx, m->proj_out, m->y, m->d_proj,
                    m->d_ctx, m->d_qkv, m->d_ln, m->dx, m->lse, m->attn_scratch};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) dev_free(bufs[i]);
}

// y = x + dropout(sum_r ctx_r W_proj[:, r]^T + b_proj)
static void tp_attention_forward(TpAttention *m, TpComm *comm, const void *x, uint64_t step) {
    const LayerConfig *c = &m->cfg;
    const int h = c->hidden;
    layernorm_forward(&m->ln1, x, m->ln_out, m->T);                // replicated
    linear_forward(&m->qkv, m->ln_out, m->qkv_out, m->T, NULL);    // column-parallel: [T, 3h/tp]
    flash_attention_forward_shard(m->qkv_out, m->ctx, m->lse, c->seq, c->batch, m->heads_local, c->heads,
                                  m->first_head, layer_head_dim(c), c->dtype, c->attn_dropout, c->causal, c->seed,
                                  dropout_offset(step, DROPOUT_SITE_ATTENTION));
    linear_forward(&m->proj, m->ctx, m->proj_out, m->T, NULL);     // row-parallel: a partial [T, h]
    timed_all_reduce(comm, m->proj_out, (size_t)(m->T * h), nccl_type(c->dtype), dtype_bytes(c->dtype));
    // The bias once, and the same dropout mask on every rank (same seed, same flat index).
    bias_dropout_add_forward(m->proj_out, m->b_proj, x, m->y, m->T, h, c->hidden_dropout, c->seed,
                             dropout_offset(step, DROPOUT_SITE_HIDDEN), c->dtype);
}

// dy: the gradient reaching y (the MLP half's dx, its residual path included).
static void tp_attention_backward(TpAttention *m, TpComm *comm, const void *dy, uint64_t step) {
    const LayerConfig *c = &m->cfg;
    const int h = c->hidden;
    add_dropout_backward(dy, NULL, NULL, m->d_proj, m->T * h, c->hidden_dropout, c->seed,
                         dropout_offset(step, DROPOUT_SITE_HIDDEN), c->dtype);
    bias_grad(m->d_proj, m->T, h, m->db_proj, c->dtype);       // replicated: same on every rank
    linear_backward(&m->proj, m->d_proj, m->d_ctx, m->T);      // dW_proj shard; d_ctx local
    flash_attention_backward_shard(m->qkv_out, m->ctx, m->d_ctx, m->lse, m->d_qkv, m->attn_scratch, c->seq,
                                   c->batch, m->heads_local, c->heads, m->first_head, layer_head_dim(c), c->dtype,
                                   c->attn_dropout, c->causal, c->seed, dropout_offset(step, DROPOUT_SITE_ATTENTION));
    linear_gemm_backward_input(&m->qkv, m->d_qkv, m->d_ln, m->T, GEMM_EPILOGUE_NONE, NULL, NULL);  // partial
    all_reduce_start(comm, m->d_ln, (size_t)(m->T * h), nccl_type(c->dtype), dtype_bytes(c->dtype));
    linear_gemm_backward_weight(&m->qkv, m->d_qkv, m->ln_out, m->T);  // dW_qkv, db_qkv shards, meanwhile
    all_reduce_finish(comm);
    layernorm_backward(&m->ln1, m->d_ln, dy, m->dx, m->T);     // + the residual's gradient
}

// ---- The MLP half of the layer on one rank ----------------------------------------------------
typedef struct {
    int h, fl;          // hidden; this rank's share of ffn
    int64_t T;          // tokens
    DType dtype;
    LayerNorm ln2;      // replicated: every rank normalises the whole y
    Linear fc1;         // rows [r f/tp, (r+1) f/tp) of W1 and b1
    Linear fc2;         // columns [r f/tp, (r+1) f/tp) of W2, no bias: added once, after the sum
    void *b2, *db2;     // FC2's bias, replicated (and its gradient, the same on every rank)
    void *ln_out, *fc1_out, *act, *out, *d_act, *d_ln, *dx;
} TpMlp;

static void tp_mlp_init(TpMlp *m, const LayerConfig *c, int tp, const LayerParams *shard) {
    memset(m, 0, sizeof *m);
    m->h = c->hidden, m->fl = c->ffn / tp, m->T = layer_tokens(c), m->dtype = c->dtype;
    float *const *w = shard->tensor;
    layernorm_init(&m->ln2, m->h, m->T, c->eps, w[P_LN2_WEIGHT], w[P_LN2_BIAS], c->dtype);
    linear_init(&m->fc1, m->h, m->fl, w[P_FC1_WEIGHT], w[P_FC1_BIAS], c->dtype);
    linear_init(&m->fc2, m->fl, m->h, w[P_FC2_WEIGHT], NULL, c->dtype);
    m->b2 = dev_upload(w[P_FC2_BIAS], m->h, c->dtype);
    m->db2 = dev_alloc((size_t)m->h * dtype_bytes(c->dtype));
    size_t th = (size_t)m->T * m->h * dtype_bytes(c->dtype), tf = (size_t)m->T * m->fl * dtype_bytes(c->dtype);
    m->ln_out = dev_alloc(th), m->out = dev_alloc(th), m->d_ln = dev_alloc(th), m->dx = dev_alloc(th);
    m->fc1_out = dev_alloc(tf), m->act = dev_alloc(tf), m->d_act = dev_alloc(tf);
}

static void tp_mlp_free(TpMlp *m) {
    layernorm_free(&m->ln2), linear_free(&m->fc1), linear_free(&m->fc2);
    void *bufs[] = {m->b2, m->db2, m->ln_out, m->fc1_out, m->act, m->out, m->d_act, m->d_ln, m->dx};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) dev_free(bufs[i]);
}

static void tp_mlp_forward(TpMlp *m, TpComm *comm, const void *y) {
    layernorm_forward(&m->ln2, y, m->ln_out, m->T);           // replicated
    linear_forward(&m->fc1, m->ln_out, m->fc1_out, m->T, NULL);  // column-parallel: [T, f/tp]
    gelu_forward_strided(m->fc1_out, m->fl, m->act, m->fl, m->T, m->fl, m->dtype);
    linear_forward(&m->fc2, m->act, m->out, m->T, NULL);      // row-parallel: a partial [T, h]
    timed_all_reduce(comm, m->out, (size_t)(m->T * m->h), nccl_type(m->dtype), 2);  // sum of the partials
    // The bias once (not tp times) and the residual, in one pass (dropout 0: FC2 has none).
    bias_dropout_add_forward(m->out, m->b2, y, m->out, m->T, m->h, 0.0f, 0, 0, m->dtype);
}

static void tp_mlp_backward(TpMlp *m, TpComm *comm, const void *dout) {
    linear_backward(&m->fc2, dout, m->d_act, m->T);           // dW2 shard; d_act local [T, f/tp]
    bias_grad(dout, m->T, m->h, m->db2, m->dtype);            // replicated: same on every rank
    gelu_backward_strided(m->d_act, m->fl, m->fc1_out, m->fl, m->d_act, m->fl, m->T, m->fl, m->dtype);
    linear_gemm_backward_input(&m->fc1, m->d_act, m->d_ln, m->T, GEMM_EPILOGUE_NONE, NULL, NULL);  // partial
    all_reduce_start(comm, m->d_ln, (size_t)(m->T * m->h), nccl_type(m->dtype), 2);
    linear_gemm_backward_weight(&m->fc1, m->d_act, m->ln_out, m->T);  // dW1, db1 shards, meanwhile
    all_reduce_finish(comm);
    layernorm_backward(&m->ln2, m->d_ln, dout, m->dx, m->T);  // + the residual's gradient
}

// ---- The whole layer on one rank -----------------------------------------------------------------
typedef struct {
    TpAttention attn;
    TpMlp mlp;
} TpLayer;

static void tp_layer_train_step(TpLayer *l, TpComm *comm, const void *x, const void *dout, uint64_t step) {
    tp_attention_forward(&l->attn, comm, x, step);
    tp_mlp_forward(&l->mlp, comm, l->attn.y);
    tp_mlp_backward(&l->mlp, comm, dout);
    tp_attention_backward(&l->attn, comm, l->mlp.dx, step);
}

// This rank's gradients, in the shapes of its parameter shards (grads allocated by the caller).
static void tp_layer_read_grads(const TpLayer *l, DType dtype, LayerParams *grads) {
    float **g = grads->tensor;
    layernorm_read_grads(&l->attn.ln1, g[P_LN1_WEIGHT], g[P_LN1_BIAS]);
    linear_read_grads(&l->attn.qkv, g[P_QKV_WEIGHT], g[P_QKV_BIAS]);
    linear_read_grads(&l->attn.proj, g[P_PROJ_WEIGHT], NULL);
    dev_download(g[P_PROJ_BIAS], l->attn.db_proj, l->mlp.h, dtype);
    layernorm_read_grads(&l->mlp.ln2, g[P_LN2_WEIGHT], g[P_LN2_BIAS]);
    linear_read_grads(&l->mlp.fc1, g[P_FC1_WEIGHT], g[P_FC1_BIAS]);
    linear_read_grads(&l->mlp.fc2, g[P_FC2_WEIGHT], NULL);
    dev_download(g[P_FC2_BIAS], l->mlp.db2, l->mlp.h, dtype);
}

// Each rank compares what it holds - out and dx (replicated), and every gradient it owns -
// with the unsharded CPU reference (ref_layer_train_step, step 0), its gradients cut like
// the parameters. Sharded gradients are the rank's own; replicated ones must be the whole.
static int check_rank(const Args *a, int rank, int tp, const TpLayer *l, const LayerParams *full,
                      const LayerInputs *in) {
    const LayerConfig *c = &a->cfg;
    const int64_t n = layer_tokens(c) * c->hidden;
    LayerResults ref;
    layer_results_alloc(c, &ref);
    ref_layer_train_step(c, full, in, 0, &ref);
    LayerParams want, got;  // the reference's gradients cut like the parameters; this rank's
    tp_shard_params(c, tp, rank, &ref.grad, &want);
    tp_shard_params(c, tp, rank, &ref.grad, &got);
    tp_layer_read_grads(l, c->dtype, &got);
    float *x = xmalloc((size_t)n * sizeof(float));
    const double tol = check_tolerance(c->dtype);
    double worst = 0.0;
    dev_download(x, l->mlp.out, n, c->dtype);
    double e_out = rel_error(x, ref.out, n);
    dev_download(x, l->attn.dx, n, c->dtype);
    double e_dx = rel_error(x, ref.dx, n);
    printf("rank %d  %-24s rel. error %.2e%s\n", rank, "out", e_out, e_out > tol ? "  FAIL" : "");
    printf("rank %d  %-24s rel. error %.2e%s\n", rank, "dx", e_dx, e_dx > tol ? "  FAIL" : "");
    worst = e_out > e_dx ? e_out : e_dx;
    for (int id = 0; id < NUM_PARAMS; id++) {
        double e = rel_error(got.tensor[id], want.tensor[id], tp_param_shard_numel(c, tp, id));
        printf("rank %d  d%-23s rel. error %.2e  (%s)%s\n", rank, PARAM_NAMES[id], e,
               tp_split_name(tp_param_split(id)), e > tol ? "  FAIL" : "");
        if (e > worst) worst = e;
    }
    printf("rank %d  check %s (worst %.2e, tolerance %.0e)\n", rank, worst <= tol ? "passed" : "FAILED", worst, tol);
    free(x);
    layer_params_free(&want), layer_params_free(&got);
    layer_results_free(&ref);
    return worst <= tol ? 0 : 1;
}

// ---- This step's block on one rank: column-parallel Linear -> LayerNorm -> row-parallel Linear ----
//   out = LN(x W1^T + b1) W2^T + b2   with the LayerNorm over the ffn features, which the
//   column-parallel W1 has split across the ranks (see the chapter: modes (a) and (b)).
typedef struct {
    int h, fl, f;
    int64_t T;
    DType dtype;
    TpLnMode mode;
    float eps;
    Linear fc1;                          // rows of W1, b1
    LayerNorm ln;                        // mode (a): a LayerNorm over the rank's fl features
    void *gamma, *beta, *dgamma, *dbeta; // mode (b): the rank's slice of gamma, beta
    float *mean, *rstd, *sums;           // mode (b): [T], [T], [T, 2] (all-reduced)
    Linear fc2;                          // columns of W2, no bias
    void *b2, *db2;                      // replicated
    void *z, *n, *out, *dn, *dz, *dx;
} TpBlockGpu;

// Rank r's slice [r fl, (r+1) fl) of a [rows, cols] host matrix's columns.
static float *column_slice(const float *m, int64_t rows, int cols, int c0, int nc) {
    float *s = xmalloc((size_t)(rows * nc) * sizeof(float));
    for (int64_t r = 0; r < rows; r++) memcpy(s + r * nc, m + r * cols + c0, (size_t)nc * sizeof(float));
    return s;
}

static void tp_block_gpu_init(TpBlockGpu *b, const TpBlock *p, int64_t T, int tp, int rank, TpLnMode mode,
                              float eps, DType dtype) {
    memset(b, 0, sizeof *b);
    b->h = p->hidden, b->f = p->ffn, b->fl = p->ffn / tp, b->T = T, b->dtype = dtype, b->mode = mode, b->eps = eps;
    const int64_t off = (int64_t)rank * b->fl;
    linear_init(&b->fc1, b->h, b->fl, p->w1 + off * b->h, p->b1 + off, dtype);  // rows: contiguous
    float *w2 = column_slice(p->w2, b->h, b->f, (int)off, b->fl);
    linear_init(&b->fc2, b->fl, b->h, w2, NULL, dtype);
    free(w2);
    if (mode == TP_LN_SHARD_LOCAL) {
        layernorm_init(&b->ln, b->fl, T, eps, p->gamma + off, p->beta + off, dtype);
    } else {
        b->gamma = dev_upload(p->gamma + off, b->fl, dtype), b->beta = dev_upload(p->beta + off, b->fl, dtype);
        b->dgamma = dev_alloc((size_t)b->fl * 2), b->dbeta = dev_alloc((size_t)b->fl * 2);
        b->mean = dev_alloc((size_t)T * sizeof(float)), b->rstd = dev_alloc((size_t)T * sizeof(float));
        b->sums = dev_alloc((size_t)T * 2 * sizeof(float));
    }
    b->b2 = dev_upload(p->b2, b->h, dtype), b->db2 = dev_alloc((size_t)b->h * 2);
    size_t th = (size_t)(T * b->h) * 2, tf = (size_t)(T * b->fl) * 2;
    b->z = dev_alloc(tf), b->n = dev_alloc(tf), b->dn = dev_alloc(tf), b->dz = dev_alloc(tf);
    b->out = dev_alloc(th), b->dx = dev_alloc(th);
}

static void tp_block_gpu_free(TpBlockGpu *b) {
    linear_free(&b->fc1), linear_free(&b->fc2);
    if (b->mode == TP_LN_SHARD_LOCAL) layernorm_free(&b->ln);
    void *bufs[] = {b->gamma, b->beta, b->dgamma, b->dbeta, b->mean, b->rstd, b->sums, b->b2, b->db2,
                    b->z, b->n, b->out, b->dn, b->dz, b->dx};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) dev_free(bufs[i]);
}

static void tp_block_gpu_forward(TpBlockGpu *b, TpComm *comm, const void *x) {
    linear_forward(&b->fc1, x, b->z, b->T, NULL);  // column-parallel: [T, f/tp]
    if (b->mode == TP_LN_SHARD_LOCAL) {
        layernorm_forward(&b->ln, b->z, b->n, b->T);  // this slice's own statistics
    } else {
        split_ln_partial_stats(b->z, b->T, b->fl, b->sums, b->dtype);
        timed_all_reduce(comm, b->sums, (size_t)(2 * b->T), ncclFloat, 4);  // 2 floats per token
        split_ln_forward_apply(b->z, b->gamma, b->beta, b->sums, b->T, b->fl, b->f, b->eps, b->n,
                               b->mean, b->rstd, b->dtype);
    }
    linear_forward(&b->fc2, b->n, b->out, b->T, NULL);  // row-parallel: partial
    timed_all_reduce(comm, b->out, (size_t)(b->T * b->h), nccl_type(b->dtype), 2);
    bias_add(b->out, b->b2, b->T, b->h, b->dtype);
}

static void tp_block_gpu_backward(TpBlockGpu *b, TpComm *comm, const void *dout) {
    linear_backward(&b->fc2, dout, b->dn, b->T);
    bias_grad(dout, b->T, b->h, b->db2, b->dtype);
    if (b->mode == TP_LN_SHARD_LOCAL) {
        layernorm_backward(&b->ln, b->dn, NULL, b->dz, b->T);
    } else {
        split_ln_partial_grad_sums(b->dn, b->z, b->gamma, b->mean, b->rstd, b->T, b->fl, b->sums, b->dtype);
        timed_all_reduce(comm, b->sums, (size_t)(2 * b->T), ncclFloat, 4);
        split_ln_backward_apply(b->dn, b->z, b->gamma, b->mean, b->rstd, b->sums, b->T, b->fl, b->f, b->dz, b->dtype);
        split_ln_param_grads(b->dn, b->z, b->mean, b->rstd, b->T, b->fl, b->dgamma, b->dbeta, b->dtype);
    }
    linear_backward(&b->fc1, b->dz, b->dx, b->T);  // dx partial
    timed_all_reduce(comm, b->dx, (size_t)(b->T * b->h), nccl_type(b->dtype), 2);
}

// Each rank against the CPU simulation of the same mode (tp_block_sim: for mode (a) that is
// NOT the unsharded block) and, for information, against the unsharded block.
static int check_block_rank(const Args *a, int rank, int tp, TpBlockGpu *b, const TpBlock *p,
                            const float *x, const float *dout) {
    const int64_t T = b->T, n = T * b->h;
    const int fl = b->fl, off = rank * fl;
    TpBlockResults sim, ref;
    tp_block_results_alloc(&sim, T, b->h, b->f);
    tp_block_results_alloc(&ref, T, b->h, b->f);
    tp_block_sim(p, x, dout, T, a->cfg.eps, tp, b->mode, &sim);
    tp_block_reference(p, x, dout, T, a->cfg.eps, &ref);
    float *got = xmalloc((size_t)(n > (int64_t)b->f * b->h ? n : (int64_t)b->f * b->h) * sizeof(float));
    float *got2 = xmalloc((size_t)(b->f > b->h ? b->f : b->h) * sizeof(float));
    float *want = xmalloc((size_t)(n > (int64_t)b->f * b->h ? n : (int64_t)b->f * b->h) * sizeof(float));
    double tol = check_tolerance(b->dtype), worst = 0.0;
    dev_download(got, b->out, n, b->dtype);
    double e_out = rel_error(got, sim.out, n), e_out_unsharded = rel_error(got, ref.out, n);
    dev_download(got, b->dx, n, b->dtype);
    double e_dx = rel_error(got, sim.dx, n);
    linear_read_grads(&b->fc1, got, got2);
    double e_w1 = rel_error(got, sim.grad.w1 + (int64_t)off * b->h, (int64_t)fl * b->h);
    double e_b1 = rel_error(got2, sim.grad.b1 + off, fl);
    linear_read_grads(&b->fc2, got, NULL);
    for (int r = 0; r < b->h; r++) memcpy(want + (int64_t)r * fl, sim.grad.w2 + (int64_t)r * b->f + off, (size_t)fl * sizeof(float));
    double e_w2 = rel_error(got, want, (int64_t)b->h * fl);
    if (b->mode == TP_LN_SHARD_LOCAL) {
        layernorm_read_grads(&b->ln, got, got2);
    } else {
        dev_download(got, b->dgamma, fl, b->dtype);
        dev_download(got2, b->dbeta, fl, b->dtype);
    }
    double e_g = rel_error(got, sim.grad.gamma + off, fl), e_be = rel_error(got2, sim.grad.beta + off, fl);
    double errs[] = {e_out, e_dx, e_w1, e_b1, e_w2, e_g, e_be};
    for (int i = 0; i < 7; i++) worst = errs[i] > worst ? errs[i] : worst;
    printf("rank %d  block (%s): vs the CPU simulation out %.1e dx %.1e dW1 %.1e db1 %.1e dW2 %.1e "
           "dgamma %.1e dbeta %.1e -> %s; out vs the UNSHARDED block %.1e\n", rank,
           b->mode == TP_LN_EXACT ? "exact" : "shard-local", e_out, e_dx, e_w1, e_b1, e_w2, e_g, e_be,
           worst <= tol ? "passed" : "FAILED", e_out_unsharded);
    free(got), free(got2), free(want);
    tp_block_results_free(&sim), tp_block_results_free(&ref);
    return worst <= tol ? 0 : 1;
}

// ---- The all-reduce alone ------------------------------------------------------------------------
static void all_reduce_sweep(TpComm *comm, DType dtype, int64_t layer_elems) {
    if (comm->world == 1) return;
    int64_t max_elems = (int64_t)1 << 27;  // 256 MiB of fp16
    void *buf = dev_alloc((size_t)max_elems * 2);
    CUDA_CHECK(cudaMemset(buf, 0, (size_t)max_elems * 2));
    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
    if (comm->rank == 0) {
        printf("\nall-reduce (sum, %s) across %d GPUs; bus bandwidth = 2 (n-1)/n * bytes / time\n", dtype_name(dtype), comm->world);
        printf("| %12s | %10s | %12s |\n|---:|---:|---:|\n", "bytes", "time (us)", "bus GB/s");
    }
    // 1, 4, 16, 64, 256 MiB, then the size the layer sends (its [T, h] activation).
    int64_t sizes[6] = {(int64_t)1 << 19, (int64_t)1 << 21, (int64_t)1 << 23, (int64_t)1 << 25,
                        (int64_t)1 << 27, layer_elems < max_elems ? layer_elems : max_elems};
    for (int k = 0; k < 6; k++) {
        const int64_t elems = sizes[k];
        const int iters = 20;
        for (int i = 0; i < 3; i++) tp_all_reduce(comm, buf, (size_t)elems, nccl_type(dtype), 0);
        CUDA_CHECK(cudaEventRecord(e0, 0));
        for (int i = 0; i < iters; i++) tp_all_reduce(comm, buf, (size_t)elems, nccl_type(dtype), 0);
        CUDA_CHECK(cudaEventRecord(e1, 0));
        tp_sync(comm, 0, "the all-reduce sweep");
        float ms;
        CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
        double t = ms / 1e3 / iters, bytes = (double)elems * 2;
        double bus = 2.0 * (comm->world - 1) / comm->world * bytes / t / 1e9;
        if (comm->rank == 0)
            printf("| %12.0f | %10.1f | %12.1f |%s\n", bytes, t * 1e6, bus, k == 5 ? "  <- the layer's [T, h]" : "");
    }
    cudaEventDestroy(e0), cudaEventDestroy(e1);
    dev_free(buf);
}

// ---- One rank -------------------------------------------------------------------------------------
static int run_rank(void *ctx) {
    const Args *a = ctx;
    RankInfo info = {0, 1, 0, "single process"};
    if (!rank_from_env(&info)) info.world = 1;
    const LayerConfig *c = &a->cfg;
    const int tp = info.world;
    const char *problem = tp_config_problem(c, tp);
    if (problem) fail_user("%s", problem);
    // Shard-on-load: every rank reads (--weights) or builds (random, deterministic in the
    // seed) the same unsharded parameters and keeps only its own shard. Files are read
    // before any GPU is touched, so a bad file is reported as such.
    LayerParams full, shard;
    LayerInputs in;
    layer_params_alloc(c, &full);
    if (a->weights_path) load_layer_params(a->weights_path, c, &full);
    else layer_params_init_random(c, c->seed, &full);
    layer_params_round(c, &full);
    layer_inputs_alloc(c, &in);
    layer_inputs_init_random(c, c->seed + 1, &in);
    layer_inputs_round(c, &in);
    tp_shard_params(c, tp, info.rank, &full, &shard);
    int gpus = gpu_count();
    if (gpus == 0) fail_user("rank %d: no GPU (%s)", info.rank, gpu_unavailable_reason());
    if (info.local_rank >= gpus)
        fail_user("rank %d needs GPU %d but this node has %d: tensor-parallel size %d is larger "
                  "than the number of GPUs", info.rank, info.local_rank, gpus, tp);
    gpu_select(info.local_rank);  // and refuse a GPU this binary cannot run on, in a sentence
    keep_nvls_off();

    TpComm comm = {0};
    comm.rank = info.rank, comm.world = tp, comm.timeout_s = a->timeout_s;
    if (tp > 1) tp_comm_init(&comm, &info, a->timeout_s);
    const int64_t T = layer_tokens(c), n = T * c->hidden;
    if (info.rank == 0) {
        if (a->block)
            printf("step 07: Linear(%d->%d) -> LayerNorm(%d, %s) -> Linear(%d->%d), tensor-parallel over %d "
                   "GPU(s) (%s), %s, tokens %lld\n", c->hidden, c->ffn, c->ffn,
                   a->ln_mode == TP_LN_EXACT ? "exact" : "shard-local", c->ffn, c->hidden, tp, info.source,
                   dtype_name(c->dtype), (long long)T);
        else
            printf("step 07: the layer, tensor-parallel over %d GPU(s) (%s), %s, hidden %d, heads %d (%d per "
                   "rank), ffn %d (%d per rank), tokens %lld\n", tp, info.source, dtype_name(c->dtype), c->hidden,
                   c->heads, c->heads / tp, c->ffn, c->ffn / tp, (long long)T);
    }

    void *d_x = dev_upload(in.x, n, c->dtype), *d_dout = dev_upload(in.dy, n, c->dtype);
    TpLayer layer;
    TpBlockGpu blk;
    TpBlock block_params;  // the block's unsharded parameters (random, the same on every rank)
    if (a->block) {
        tp_block_alloc(&block_params, c->hidden, c->ffn);
        tp_block_init_random(&block_params, c->seed + 2);
        round_to_dtype(block_params.w1, (int64_t)c->ffn * c->hidden, c->dtype);
        round_to_dtype(block_params.b1, c->ffn, c->dtype);
        round_to_dtype(block_params.gamma, c->ffn, c->dtype);
        round_to_dtype(block_params.beta, c->ffn, c->dtype);
        round_to_dtype(block_params.w2, (int64_t)c->hidden * c->ffn, c->dtype);
        round_to_dtype(block_params.b2, c->hidden, c->dtype);
        tp_block_gpu_init(&blk, &block_params, T, tp, info.rank, a->ln_mode, c->eps, c->dtype);
    } else {
        tp_attention_init(&layer.attn, c, tp, info.rank, &shard);
        tp_mlp_init(&layer.mlp, c, tp, &shard);
    }
    timer_init();
    cudaEvent_t start, stop;
    CUDA_CHECK(cudaEventCreate(&start));
    CUDA_CHECK(cudaEventCreate(&stop));
    double total_ms = 0.0, ar_ms = 0.0, ar_bytes = 0.0;
    int ar_count = 0;
    for (int it = 0; it < a->warmup + a->iters; it++) {
        timer.count = 0, timer.bytes = 0.0;
        CUDA_CHECK(cudaEventRecord(start, 0));
        if (a->block) {
            tp_block_gpu_forward(&blk, &comm, d_x);
            tp_block_gpu_backward(&blk, &comm, d_dout);
        } else {
            tp_layer_train_step(&layer, &comm, d_x, d_dout, (uint64_t)it);
        }
        CUDA_CHECK(cudaEventRecord(stop, 0));
        tp_sync(&comm, 0, "a training step");
        if (it < a->warmup) continue;
        float ms;
        CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
        total_ms += ms;
        ar_ms += timer_ms();
        ar_bytes = timer.bytes, ar_count = timer.count;
    }
    total_ms /= a->iters, ar_ms /= a->iters;
    // The layer's backward all-reduces run beside its weight-gradient GEMMs, so their time is
    // not all on the step's critical path: "all-reduces running" is their summed duration.
    printf("rank %d: %.3f ms per forward+backward; all-reduces running %.3f ms (%.0f%% of the step; %d of "
           "them, %.1f MB in all, bus bandwidth %.1f GB/s)\n", info.rank, total_ms, ar_ms,
           total_ms > 0 ? 100.0 * ar_ms / total_ms : 0.0, ar_count, ar_bytes / 1e6,
           ar_ms > 0 ? 2.0 * (tp - 1) / tp * ar_bytes / (ar_ms / 1e3) / 1e9 : 0.0);
    fflush(stdout);

    int status = 0;
    if (a->check && a->block) status = check_block_rank(a, info.rank, tp, &blk, &block_params, in.x, in.dy);
    else if (a->check) {
        tp_layer_train_step(&layer, &comm, d_x, d_dout, 0);  // step 0, as the reference draws dropout
        tp_sync(&comm, 0, "the checked step");
        status = check_rank(a, info.rank, tp, &layer, &full, &in);
    }
    if (a->sweep) all_reduce_sweep(&comm, c->dtype, n);

    if (a->block) tp_block_gpu_free(&blk), tp_block_free(&block_params);
    else tp_attention_free(&layer.attn), tp_mlp_free(&layer.mlp);
    timer_free();
    dev_free(d_x), dev_free(d_dout);
    cudaEventDestroy(start), cudaEventDestroy(stop);
    if (tp > 1) tp_comm_destroy(&comm);
    layer_params_free(&full), layer_params_free(&shard);
    layer_inputs_free(&in);
    return status;
}

int main(int argc, char **argv) {
    Args a;
    parse_args(argc, argv, &a);
    RankInfo info;
    int have_env = rank_from_env(&info);
    if (a.tp > 0 && have_env)
        fail_user("--tp %d forks local ranks, but this process already is rank %d of %d (%s): "
                  "drop --tp", a.tp, info.rank, info.world, info.source);
    // Bad sizes are reported before anything starts, by the parent.
    const char *problem = tp_config_problem(&a.cfg, a.tp > 0 ? a.tp : have_env ? info.world : 1);
    if (problem) fail_user("%s", problem);
    if (a.tp > 1) return launch_local(a.tp, a.port, run_rank, &a);
    keep_nvls_off();
    return run_rank(&a);
}
