// Step 07: tensor parallelism over NCCL, one process per GPU.
//
// What runs on the GPUs: the MLP half of the layer, Megatron-style, forward and backward,
//
//   out = y + FC2(GELU(FC1(LN2(y))))      FC1 column-parallel (ffn/tp outputs per rank),
//                                         FC2 row-parallel (ffn/tp inputs per rank),
//                                         one all-reduce forward (FC2's partial outputs)
//                                         and one backward (LN2's partial input gradient),
//
// built from step 02's modules (Linear, LayerNorm on cuBLASLt) and step 01's GELU and bias
// kernels. The attention half is cut the same way (QKV by heads, projection row-parallel)
// and is proven on the CPU (common/tp_reference.c, tests/tp); its GPU version is not here yet.
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

#include "common/check.h"
#include "common/compare.h"
#include "common/cuda_check.h"
#include "common/gpu.h"
#include "common/layer.h"
#include "common/modules/layernorm.h"
#include "common/modules/linear.h"
#include "common/nccl_check.h"
#include "common/reference.h"
#include "common/tp_reference.h"
#include "common/weights_io.h"
#include "kernels/naive/bias.h"
#include "kernels/naive/gelu.h"
#include "kernels/naive/residual.h"
#include "steps/07_tensor_parallel/tp_comm.h"

typedef struct {
    LayerConfig cfg;
    int tp;  // --tp N: fork N local ranks (0: take the ranks from the environment)
    int port, warmup, iters, check, sweep;
    double timeout_s;
    const char *weights_path;  // unsharded (tp = 1) parameters; NULL: random
} Args;

static void usage(void) {
    printf("usage: tp [--tp N] [--preset quickstart|small|tiny] [--dtype fp16|bf16]\n"
           "          [--iters N] [--warmup N] [--check] [--no-sweep] [--port P] [--timeout S]\n"
           "          [--weights FILE]\n"
           "  --tp N      fork N ranks on this node (one per GPU); without it the rank and world\n"
           "              size come from mpirun / srun / RANK,WORLD_SIZE and NCCL_COMM_ID\n"
           "  --check     compare every rank's results (out, dx, its gradient shards) with the\n"
           "              CPU reference (use --preset small)\n"
           "  --no-sweep  skip the all-reduce bandwidth table\n"
           "  --timeout S seconds any rank waits for its peers before aborting (default 120)\n"
           "  --weights F the layer's unsharded parameters (safetensors, PyTorch names); each\n"
           "              rank keeps its shard (default: random)\n");
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
        else if (!strcmp(f, "--weights")) {
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
    cudaEvent_t ar_start[2], ar_stop[2];  // around the forward and the backward all-reduce
} TpMlp;

static ncclDataType_t nccl_type(DType d) { return d == DTYPE_BF16 ? ncclBfloat16 : ncclHalf; }

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
    for (int i = 0; i < 2; i++) {
        CUDA_CHECK(cudaEventCreate(&m->ar_start[i]));
        CUDA_CHECK(cudaEventCreate(&m->ar_stop[i]));
    }
}

static void tp_mlp_free(TpMlp *m) {
    layernorm_free(&m->ln2), linear_free(&m->fc1), linear_free(&m->fc2);
    void *bufs[] = {m->b2, m->db2, m->ln_out, m->fc1_out, m->act, m->out, m->d_act, m->d_ln, m->dx};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) dev_free(bufs[i]);
    for (int i = 0; i < 2; i++) cudaEventDestroy(m->ar_start[i]), cudaEventDestroy(m->ar_stop[i]);
}

// The all-reduce, bracketed by events so that its share of the step can be measured. (The
// events also count the time a rank waits for the slowest peer to arrive: that is part of
// what tensor parallelism costs.)
static void timed_all_reduce(TpComm *comm, TpMlp *m, int which, void *buf) {
    CUDA_CHECK(cudaEventRecord(m->ar_start[which], 0));
    tp_all_reduce(comm, buf, (size_t)(m->T * m->h), nccl_type(m->dtype), 0);
    CUDA_CHECK(cudaEventRecord(m->ar_stop[which], 0));
}

static void tp_mlp_forward(TpMlp *m, TpComm *comm, const void *y) {
    layernorm_forward(&m->ln2, y, m->ln_out, m->T);           // replicated
    linear_forward(&m->fc1, m->ln_out, m->fc1_out, m->T, NULL);  // column-parallel: [T, f/tp]
    gelu_forward(m->fc1_out, m->T * m->fl, m->act, m->dtype);
    linear_forward(&m->fc2, m->act, m->out, m->T, NULL);      // row-parallel: a partial [T, h]
    timed_all_reduce(comm, m, 0, m->out);                     // sum of the partials
    bias_add(m->out, m->b2, m->T, m->h, m->dtype);            // the bias once, not tp times
    residual_add(m->out, y, m->T * m->h, m->out, m->dtype);
}

static void tp_mlp_backward(TpMlp *m, TpComm *comm, const void *dout) {
    linear_backward(&m->fc2, dout, m->d_act, m->T);           // dW2 shard; d_act local [T, f/tp]
    bias_grad(dout, m->T, m->h, m->db2, m->dtype);            // replicated: same on every rank
    gelu_backward(m->d_act, m->fc1_out, m->T * m->fl, m->d_act, m->dtype);
    linear_backward(&m->fc1, m->d_act, m->d_ln, m->T);        // dW1, db1 shards; d_ln partial
    timed_all_reduce(comm, m, 1, m->d_ln);
    layernorm_backward(&m->ln2, m->d_ln, dout, m->dx, m->T);  // + the residual's gradient
}

// ---- The CPU reference of the MLP half, for --check --------------------------------------------
static void ref_mlp(const LayerConfig *c, const LayerParams *p, const float *y, const float *dout,
                    float *out, float *dx, LayerParams *g) {
    const int64_t T = layer_tokens(c);
    const int h = c->hidden, f = c->ffn;
    float *const *w = p->tensor;
    float **gw = g->tensor;
    float *ln = xmalloc((size_t)(T * h) * sizeof(float)), *mean = xmalloc((size_t)T * sizeof(float));
    float *rstd = xmalloc((size_t)T * sizeof(float)), *fc1 = xmalloc((size_t)(T * f) * sizeof(float));
    float *act = xmalloc((size_t)(T * f) * sizeof(float)), *d_act = xmalloc((size_t)(T * f) * sizeof(float));
    float *d_ln = xmalloc((size_t)(T * h) * sizeof(float));
    ref_layernorm_forward(y, w[P_LN2_WEIGHT], w[P_LN2_BIAS], T, h, c->eps, ln, mean, rstd);
    ref_linear_forward(ln, w[P_FC1_WEIGHT], w[P_FC1_BIAS], T, h, f, fc1);
    ref_gelu_forward(fc1, T * f, act);
    ref_linear_forward(act, w[P_FC2_WEIGHT], w[P_FC2_BIAS], T, f, h, out);
    for (int64_t i = 0; i < T * h; i++) out[i] += y[i];
    ref_linear_backward(dout, act, w[P_FC2_WEIGHT], T, f, h, d_act, gw[P_FC2_WEIGHT], gw[P_FC2_BIAS]);
    ref_gelu_backward(d_act, fc1, T * f, d_act);
    ref_linear_backward(d_act, ln, w[P_FC1_WEIGHT], T, h, f, d_ln, gw[P_FC1_WEIGHT], gw[P_FC1_BIAS]);
    ref_layernorm_backward(d_ln, y, w[P_LN2_WEIGHT], mean, rstd, T, h, dx, gw[P_LN2_WEIGHT], gw[P_LN2_BIAS]);
    for (int64_t i = 0; i < T * h; i++) dx[i] += dout[i];
    free(ln), free(mean), free(rstd), free(fc1), free(act), free(d_act), free(d_ln);
}

// Each rank compares what it holds: out and dx (replicated) and its own gradient shards
// against the same slice of the unsharded reference's gradients.
static int check_rank(const Args *a, int rank, int tp, TpMlp *m, const LayerParams *full,
                      const float *y, const float *dout) {
    const LayerConfig *c = &a->cfg;
    const int64_t T = layer_tokens(c), n = T * c->hidden;
    LayerResults ref;
    layer_results_alloc(c, &ref);
    ref_mlp(c, full, y, dout, ref.out, ref.dx, &ref.grad);
    LayerParams ref_shard;  // the reference's gradients cut like the parameters
    tp_shard_params(c, tp, rank, &ref.grad, &ref_shard);
    float *got = xmalloc((size_t)(n > (int64_t)c->ffn * c->hidden ? n : (int64_t)c->ffn * c->hidden) * sizeof(float));
    float *got_b = xmalloc((size_t)(c->ffn > c->hidden ? c->ffn : c->hidden) * sizeof(float));
    double tol = check_tolerance(c->dtype), worst = 0.0;
    struct { const char *name; double err; } rows[9];
    int k = 0;
    dev_download(got, m->out, n, c->dtype);
    rows[k].name = "out", rows[k++].err = rel_error(got, ref.out, n);
    dev_download(got, m->dx, n, c->dtype);
    rows[k].name = "dx", rows[k++].err = rel_error(got, ref.dx, n);
    linear_read_grads(&m->fc1, got, got_b);
    rows[k].name = "dW1 shard", rows[k++].err = rel_error(got, ref_shard.tensor[P_FC1_WEIGHT], tp_param_shard_numel(c, tp, P_FC1_WEIGHT));
    rows[k].name = "db1 shard", rows[k++].err = rel_error(got_b, ref_shard.tensor[P_FC1_BIAS], m->fl);
    linear_read_grads(&m->fc2, got, NULL);
    rows[k].name = "dW2 shard", rows[k++].err = rel_error(got, ref_shard.tensor[P_FC2_WEIGHT], tp_param_shard_numel(c, tp, P_FC2_WEIGHT));
    dev_download(got, m->db2, c->hidden, c->dtype);
    rows[k].name = "db2", rows[k++].err = rel_error(got, ref.grad.tensor[P_FC2_BIAS], c->hidden);
    layernorm_read_grads(&m->ln2, got, got_b);
    rows[k].name = "dgamma2", rows[k++].err = rel_error(got, ref.grad.tensor[P_LN2_WEIGHT], c->hidden);
    rows[k].name = "dbeta2", rows[k++].err = rel_error(got_b, ref.grad.tensor[P_LN2_BIAS], c->hidden);
    for (int i = 0; i < k; i++) {
        printf("rank %d  %-10s rel. error %.2e%s\n", rank, rows[i].name, rows[i].err, rows[i].err > tol ? "  FAIL" : "");
        if (rows[i].err > worst) worst = rows[i].err;
    }
    printf("rank %d  check %s (worst %.2e, tolerance %.0e)\n", rank, worst <= tol ? "passed" : "FAILED", worst, tol);
    free(got), free(got_b);
    layer_params_free(&ref_shard);
    layer_results_free(&ref);
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
    LayerInputs in;  // in.x plays y, the MLP half's input; in.dy its output gradient
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
    CUDA_CHECK(cudaSetDevice(info.local_rank));
    keep_nvls_off();

    TpComm comm = {0};
    comm.rank = info.rank, comm.world = tp, comm.timeout_s = a->timeout_s;
    if (tp > 1) tp_comm_init(&comm, &info, a->timeout_s);
    if (info.rank == 0)
        printf("step 07: MLP half of the layer, tensor-parallel over %d GPU(s) (%s), %s, hidden %d, "
               "ffn %d (%d per rank), tokens %lld\n", tp, info.source, dtype_name(c->dtype), c->hidden,
               c->ffn, c->ffn / tp, (long long)layer_tokens(c));

    const int64_t n = layer_tokens(c) * c->hidden;
    void *d_y = dev_upload(in.x, n, c->dtype), *d_dout = dev_upload(in.dy, n, c->dtype);
    TpMlp m;
    tp_mlp_init(&m, c, tp, &shard);
    cudaEvent_t start, stop;
    CUDA_CHECK(cudaEventCreate(&start));
    CUDA_CHECK(cudaEventCreate(&stop));
    double total_ms = 0.0, ar_ms = 0.0;
    for (int it = 0; it < a->warmup + a->iters; it++) {
        CUDA_CHECK(cudaEventRecord(start, 0));
        tp_mlp_forward(&m, &comm, d_y);
        tp_mlp_backward(&m, &comm, d_dout);
        CUDA_CHECK(cudaEventRecord(stop, 0));
        tp_sync(&comm, 0, "a training step");
        if (it < a->warmup) continue;
        float ms;
        CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
        total_ms += ms;
        if (tp > 1)
            for (int i = 0; i < 2; i++) {
                CUDA_CHECK(cudaEventElapsedTime(&ms, m.ar_start[i], m.ar_stop[i]));
                ar_ms += ms;
            }
    }
    total_ms /= a->iters, ar_ms /= a->iters;
    double bytes = 2.0 * (double)n * dtype_bytes(c->dtype);  // two all-reduces of [T, h]
    printf("rank %d: %.3f ms per forward+backward, of which %.3f ms (%.0f%%) in the 2 all-reduces "
           "(%.1f MB each, bus bandwidth %.1f GB/s)\n", info.rank, total_ms, ar_ms,
           total_ms > 0 ? 100.0 * ar_ms / total_ms : 0.0, bytes / 2 / 1e6,
           ar_ms > 0 ? 2.0 * (tp - 1) / tp * bytes / (ar_ms / 1e3) / 1e9 : 0.0);
    fflush(stdout);

    int status = 0;
    if (a->check) status = check_rank(a, info.rank, tp, &m, &full, in.x, in.dy);
    if (a->sweep) all_reduce_sweep(&comm, c->dtype, n);

    tp_mlp_free(&m);
    dev_free(d_y), dev_free(d_dout);
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
