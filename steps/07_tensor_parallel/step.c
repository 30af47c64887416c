// Step 07: the layer tensor-parallel over NCCL, one process per GPU (see step07.h and the
// chapter, README.md).
//
// What one rank does (run_rank):
//   1. take its GPU (LOCAL_RANK) and join the communicator (tp_comm.h)
//   2. keep its shard of the unsharded parameters (shard-on-load: tp_shard_params) and its
//      tokens of x and dy (all of them, or its slice under sequence parallelism)
//   3. build the layer (tp_layer.h: serial or parallel; plain TP or sequence parallelism) or
//      the step's Linear -> LayerNorm -> Linear block (tp_block.h)
//   4. time warm-up + timed training steps; print the time per step, the time in
//      collectives (layer_comm.h) and the memory
//   5. --check: one more step (step 0's dropout masks) against the CPU (tp_check.h);
//      --save, --json; the all-reduce sweep against bare NCCL (tp_sweep.h)
#define _POSIX_C_SOURCE 200809L
#include <cuda_runtime.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/core/errors.h"
#include "common/core/flags.h"
#include "common/core/tolerance.h"
#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu.h"
#include "common/io/output_file.h"
#include "common/io/weights_io.h"
#include "kernels/attention/attention.h"
#include "modules/gemm.h"
#include "modules/linear.h"
#include "reference/tp_layer_reference.h"
#include "reference/tp_reference.h"
#include "steps/07_tensor_parallel/layer_comm.h"
#include "steps/07_tensor_parallel/nccl_window.h"
#include "steps/07_tensor_parallel/row_parallel.h"
#include "steps/07_tensor_parallel/step07.h"
#include "steps/07_tensor_parallel/tp_block.h"
#include "steps/07_tensor_parallel/tp_check.h"
#include "steps/07_tensor_parallel/tp_comm.h"
#include "steps/07_tensor_parallel/tp_layer.h"
#include "steps/07_tensor_parallel/tp_schedule.h"
#include "steps/07_tensor_parallel/tp_sweep.h"

// ---- This step's flags ---------------------------------------------------------------------
static struct {
    int tp;             // --tp N: fork N ranks here (0: the environment's rank, or one process)
    int port;           // --port P: where rank 0 listens (NCCL_COMM_ID=127.0.0.1:P); 0: chosen
    double timeout_s;   // --timeout S: how long any rank waits for its peers
    int sweep;          // --no-sweep clears it
    int block;          // --block local|exact: the Linear -> LayerNorm -> Linear block instead
    TpLnMode ln_mode;
    TpVariant variant;  // --parallel, --sequence-parallel
    LayerCommOptions comm;       // --no-overlap, --overlap-priority, --overlap-ctas, --nccl-cta-policy, --overlap-sm-margin,
                                 // --nccl-register / --no-nccl-register (-1 until resolved: auto)
    TpSchedule sched;            // --keep-gathered, --fprop-chunks, --recompute-gelu, --recompute-layernorm
    unsigned overlap_knobs;  // the overlap's knobs given (OverlapKnob bits; refused with --no-overlap, --block)
} flags = {0, 0, 120.0, 1, 0, TP_LN_SHARD_LOCAL, {TP_LAYER_SERIAL, 0, 0, 0, 0},
           {1, 1, 0, TP_CTA_POLICY_UNSET, -1, LAYER_COMM_SM_MARGIN_AUTO}, {SP_REGATHER, 1, 0, 0}, 0};

// The knobs that only set up the overlap, in the order a refusal names them.
typedef enum { KNOB_PRIORITY, KNOB_CTAS, KNOB_CTA_POLICY, KNOB_SM_MARGIN, NUM_KNOBS } OverlapKnob;
static const char *const KNOB_FLAGS[NUM_KNOBS] = {"--overlap-priority", "--overlap-ctas", "--nccl-cta-policy",
                                                 "--overlap-sm-margin"};

// Notes knob k given (on) or, for a margin given again as 0, no longer (a flag's last value
// counts); returns 1: taken.
static int overlap_knob(OverlapKnob k, int on) {
    flags.overlap_knobs = on ? flags.overlap_knobs | 1u << k : flags.overlap_knobs & ~(1u << k);
    return 1;
}

// The first of the overlap's knobs given, NULL if none.
static const char *overlap_knob_given(void) {
    for (int k = 0; k < NUM_KNOBS; k++)
        if (flags.overlap_knobs & 1u << k) return KNOB_FLAGS[k];
    return NULL;
}

static int parse_flag(const char *f, const char *v) {
    if (!v) {  // flags without a value
        if (!strcmp(f, "--no-sweep")) return flags.sweep = 0, 1;
        if (!strcmp(f, "--parallel")) return flags.variant.layer = TP_LAYER_PARALLEL, 1;
        if (!strcmp(f, "--sequence-parallel")) return flags.variant.sequence_parallel = 1, 1;
        if (!strcmp(f, "--no-overlap")) return flags.comm.overlap = 0, 1;
        if (!strcmp(f, "--keep-gathered")) return flags.sched.sp_input = SP_KEEP_GATHERED, 1;
        if (!strcmp(f, "--recompute-gelu")) return flags.sched.recompute_gelu = 1, 1;
        if (!strcmp(f, "--recompute-layernorm")) return flags.sched.recompute_layernorm = 1, 1;
        // The pair contradicts itself: refused (one flag given twice takes its last value).
        if (!strcmp(f, "--nccl-register") || !strcmp(f, "--no-nccl-register")) {
            const int on = !strcmp(f, "--nccl-register");
            if (flags.comm.nccl_register == !on)
                fail_user("--nccl-register and --no-nccl-register contradict each other: give one of them");
            return flags.comm.nccl_register = on, 1;
        }
        return 0;
    }
    if (!strcmp(f, "--overlap-priority")) {
        static const char *const levels[] = {"normal", "high"};
        flags.comm.side_priority_high = parse_choice_flag(f, v, levels, 2);
        return overlap_knob(KNOB_PRIORITY, 1);
    }
    if (!strcmp(f, "--fprop-chunks"))
        return flags.sched.fprop_chunks = (int)parse_int_flag(f, v, 1, ROW_PARALLEL_MAX_CHUNKS), 1;
    if (!strcmp(f, "--overlap-ctas")) {
        flags.comm.side_ctas = (int)parse_int_flag(f, v, 1, 32);
        return overlap_knob(KNOB_CTAS, 1);
    }
    if (!strcmp(f, "--overlap-sm-margin")) {
        flags.comm.sm_margin = (int)parse_int_flag(f, v, 0, 128);  // 0: all SMs
        return overlap_knob(KNOB_SM_MARGIN, flags.comm.sm_margin > 0);
    }
    if (!strcmp(f, "--nccl-cta-policy")) {
        // The words' order is NCCL's values' (NCCL_CTA_POLICY_DEFAULT 0, _EFFICIENCY 1, _ZERO 2).
        static const char *const policies[] = {"default", "efficiency", "zero"};
        flags.comm.side_cta_policy = (TpCtaPolicy)parse_choice_flag(f, v, policies, 3);
        return overlap_knob(KNOB_CTA_POLICY, 1);
    }
    if (!strcmp(f, "--tp")) return flags.tp = (int)parse_int_flag(f, v, 1, TP_MAX_RANKS), 1;
    if (!strcmp(f, "--port")) return flags.port = (int)parse_int_flag(f, v, 1024, 65535), 1;
    if (!strcmp(f, "--timeout")) return flags.timeout_s = (double)parse_int_flag(f, v, 1, 86400), 1;
    if (!strcmp(f, "--block")) {
        static const char *const modes[] = {"local", "exact"};
        flags.ln_mode = parse_choice_flag(f, v, modes, 2) == 1 ? TP_LN_EXACT : TP_LN_SHARD_LOCAL;
        return flags.block = 1, 1;
    }
    return 0;
}

static const char *unsupported(const LayerConfig *c) {
    const AttentionProblem p = attention_layer_problem(c);
    return attention_unsupported(&p);
}

// The unsharded reference of the variant the flags chose.
static void reference(const LayerConfig *c, const LayerParams *p, const LayerInputs *in, uint64_t step,
                      LayerResults *res) {
    tp_variant_reference(&flags.variant)(c, p, in, step, res);
}

const StepOps STEP_07_TENSOR_PARALLEL = {
    .id = "07_tensor_parallel",
    .title = "tensor parallelism over NCCL",
    .whats_new = "Megatron-style TP: column-/row-parallel Linears, all-reduces; sequence parallelism",
    .unsupported = unsupported,
    .parse_flag = parse_flag,
    .flags_help =
        "  --tp N               fork N ranks on this machine, one per GPU; without it the rank and\n"
        "                       world size come from mpirun / srun / RANK,WORLD_SIZE and NCCL_COMM_ID\n"
        "  --parallel           step 06's parallel layer (one all-reduce each way) instead of the\n"
        "                       serial one (two each way)\n"
        "  --sequence-parallel  LayerNorm, dropout, residual on each rank's seq/tp tokens; all-gather\n"
        "                       before and reduce-scatter after the tensor-parallel GEMMs\n"
        "  --no-overlap         run backward's collectives in line on the compute stream, instead of\n"
        "                       starting each on a side stream beside the weight-gradient GEMM (default)\n"
        "  --overlap-priority high|normal  the side stream's priority (default high: NCCL's blocks get\n"
        "                       free multiprocessors before the GEMM's)\n"
        "  --overlap-ctas N     the overlapped collectives on a second communicator of N CTAs (default:\n"
        "                       the main communicator, NCCL's own count)\n"
        "  --overlap-sm-margin N  plan the GEMMs that run beside a started all-reduce or reduce-scatter\n"
        "                       for N fewer SMs than the GPU has (cuBLASLt's SM count target), so that\n"
        "                       none of their CTAs waits for the SMs NCCL holds (N in [0, 128]; 0: all\n"
        "                       SMs; default 16, or an eighth of a GPU's SMs where fewer; 0 under\n"
        "                       --deterministic, --no-overlap and --block, which refuse N > 0)\n"
        "  --nccl-cta-policy default|efficiency|zero\n"
        "                       the overlapped collectives on a second communicator of this CTA policy\n"
        "                       (ncclConfig_t.CTAPolicy, NCCL >= 2.27; zero: >= 2.28; the layer's buffers\n"
        "                       are not symmetric windows, so the policy only changes how many CTAs NCCL\n"
        "                       takes); with --overlap-ctas, both. An NCCL without it says so and the run\n"
        "                       goes on without it\n"
        "  --nccl-register      the layer's buffers from ncclMemAlloc, and those sequence parallelism's\n"
        "                       all-gathers read and write registered with NCCL (ncclCommRegister,\n"
        "                       NCCL >= 2.19) on the communicator that gathers with them: NCCL then copies\n"
        "                       between the ranks' buffers directly (with or without --no-overlap). The\n"
        "                       default with --sequence-parallel at --tp 2 or more where NCCL has it (an\n"
        "                       older NCCL: said, and the run goes on without); given, it is refused\n"
        "                       where it cannot apply. The peak memory printed counts the bytes asked\n"
        "                       for, not ncclMemAlloc's rounding up to its granularity\n"
        "  --no-nccl-register   sequence parallelism's all-gathers on cudaMalloc's buffers (NCCL stages\n"
        "                       them through its own)\n"
        "  --keep-gathered      with --sequence-parallel: keep the all-gathered LayerNorm outputs for the\n"
        "                       weight gradients instead of all-gathering them again in backward\n"
        "  --recompute-gelu     keep FC1's output, not GELU's: GELU's output is computed again in\n"
        "                       backward for FC2's weight gradient (the parallel layer: W_out's)\n"
        "  --recompute-layernorm\n"
        "                       keep no LayerNorm output: each is computed again in backward from the\n"
        "                       kept input (the same kernel, the same bits) for the QKV / FC1 (W_in)\n"
        "                       weight gradient; under --sequence-parallel the rank's slice, gathered\n"
        "                       again (not with --keep-gathered)\n"
        "  --fprop-chunks N     plain TP: each row-parallel forward GEMM in N row blocks, each block's\n"
        "                       all-reduce beside the next block's GEMM (default 1: one GEMM, then the\n"
        "                       all-reduce)\n"
        "  --block local|exact  the block Linear(h->ffn) -> LayerNorm(ffn) -> Linear(ffn->h) instead,\n"
        "                       its LayerNorm shard-local (a GroupNorm) or exact (statistics all-reduced)\n"
        "  --no-sweep           skip the collectives' sweep (ours against bare NCCL, NCCL's registered\n"
        "                       buffers, symmetric windows and CTA policies, each beside a GEMM)\n"
        "  --timeout S          seconds any rank waits for its peers before aborting (default 120)\n"
        "  --port P             where rank 0 listens for --tp (default 29500 + pid % 1000)\n"
        "  --check compares every rank's out, dx and gradient shards with the unsharded CPU reference.\n",
    .reference = reference,
};

// ---- One rank ----------------------------------------------------------------------------------
typedef struct {
    const Options *o;
    const LayerParams *full;  // unsharded, read (or drawn) once before the ranks start
    const LayerInputs *in;    // the whole x and dy
} RankJob;

typedef struct {
    double ms, collective_ms, bus_gbps, activation_mib, peak_mib;
    double plain_mib;  // what plain TP keeps at this tp (same layer, default schedule): the yardstick
    int collectives;
    double collective_mb;
} RankTimes;

// What the flags chose for the collectives, in words (the header, the timing line, --json).
static const char *sp_input_name(void) {
    if (flags.block || !flags.variant.sequence_parallel) return "-";
    return flags.sched.sp_input == SP_KEEP_GATHERED ? "kept gathered" : "gathered again in backward";
}

// The whole schedule in words: "collectives overlapped (side stream at high priority, NCCL's own
// CTA count); forward's all-reduces in 4 row blocks; LayerNorm outputs gathered again in backward;
// GELU's output recomputed in backward; LayerNorm outputs recomputed in backward".
static const char *schedule_words(const LayerComm *lc, char *buf, size_t size) {
    char comm[192], chunks[64] = "";
    const char *registered = lc->opt.nccl_register ? "; all-gathers on NCCL-registered buffers" : "";
    if (flags.sched.fprop_chunks > 1)
        snprintf(chunks, sizeof chunks, "; forward's all-reduces in %d row blocks", flags.sched.fprop_chunks);
    snprintf(buf, size, "collectives %s%s%s%s%s%s%s", layer_comm_schedule_name(lc, comm, sizeof comm), registered,
             chunks,
             flags.variant.sequence_parallel ? "; LayerNorm outputs " : "",
             flags.variant.sequence_parallel ? sp_input_name() : "",
             flags.sched.recompute_gelu ? "; GELU's output recomputed in backward" : "",
             flags.sched.recompute_layernorm ? "; LayerNorm outputs recomputed in backward" : "");
    return buf;
}

static void print_header(const Options *o, const RankInfo *info, const LayerComm *lc) {
    const LayerConfig *c = &o->layer;
    const int tp = info->world;
    printf("step %s: %s\nGPU: %s\n", STEP_07_TENSOR_PARALLEL.id, STEP_07_TENSOR_PARALLEL.title, gpu_description());
    printf("config: hidden %d, ffn %d, heads %d (head_dim %d), seq %d, batch %d, %s, dropout %.2g/%.2g%s%s\n",
           c->hidden, c->ffn, c->heads, layer_head_dim(c), c->seq, c->batch, dtype_name(c->dtype), c->attn_dropout,
           c->hidden_dropout, c->causal ? ", causal" : "", c->deterministic ? ", deterministic" : "");
    if (flags.block)
        printf("tensor-parallel over %d GPU(s) (%s): the block Linear(%d->%d) -> LayerNorm(%d, %s) -> "
               "Linear(%d->%d), tokens %lld\n", tp, info->source, c->hidden, c->ffn, c->ffn,
               flags.ln_mode == TP_LN_EXACT ? "exact" : "shard-local", c->ffn, c->hidden, (long long)layer_tokens(c));
    else
        printf("tensor-parallel over %d GPU(s) (%s): the %s layer; per rank %d of %d heads, %d of %d ffn "
               "features, %lld of %lld tokens outside the tensor-parallel GEMMs\n", tp, info->source,
               tp_variant_name(&flags.variant), c->heads / tp, c->heads, c->ffn / tp, c->ffn,
               (long long)(layer_tokens(c) / (flags.variant.sequence_parallel ? tp : 1)), (long long)layer_tokens(c));
    char sched[512];
    if (!flags.block) printf("schedule: %s\n", schedule_words(lc, sched, sizeof sched));
    fflush(stdout);
}

// Rank 0 gets the results of step 0 put together: out and dx (gathered under sequence
// parallelism) and every gradient, through one fp32 all-reduce per parameter of a tensor in
// which each rank has written its shard in its place and zeros elsewhere (replicated
// parameters: rank 0's copy only). Used by --save.
static void gather_results(const LayerConfig *c, TpComm *comm, const TpLayer *l, LayerResults *res) {
    const int tp = comm->world, sp = l->variant.sequence_parallel;
    const int64_t n = layer_tokens(c) * c->hidden, n_loc = sp ? n / tp : n;
    void *whole = dev_alloc((size_t)n * dtype_bytes(c->dtype));
    const ncclDataType_t type = c->dtype == DTYPE_BF16 ? ncclBfloat16 : ncclHalf;
    const void *mine[2] = {tp_layer_output(l), tp_layer_dx(l)};
    float *dst[2] = {res->out, res->dx};
    for (int k = 0; k < 2; k++) {
        if (sp) tp_all_gather(comm, mine[k], whole, (size_t)n_loc, type, 0);  // the ranks' slices, in order
        else CUDA_CHECK(cudaMemcpy(whole, mine[k], (size_t)n * dtype_bytes(c->dtype), cudaMemcpyDeviceToDevice));
        tp_sync(comm, 0, "gathering out and dx");
        dev_download(dst[k], whole, n, c->dtype);
    }
    dev_free(whole);
    LayerParams *shards = xcalloc((size_t)tp, sizeof(LayerParams));  // zeros but for this rank's
    for (int r = 0; r < tp; r++)
        for (int id = 0; id < NUM_PARAMS; id++)
            shards[r].tensor[id] = xcalloc((size_t)tp_param_shard_numel(c, tp, id), sizeof(float));
    tp_layer_read_grads(l, &shards[comm->rank]);
    tp_gather_params(c, tp, shards, &res->grad);
    for (int id = 0; id < NUM_PARAMS; id++) {
        const int64_t numel = param_numel(c, id);
        float *d = dev_upload_f32(res->grad.tensor[id], numel);
        tp_all_reduce(comm, d, (size_t)numel, ncclFloat32, 0);
        tp_sync(comm, 0, "gathering the gradients");
        dev_download_f32(res->grad.tensor[id], d, numel);
        dev_free(d);
    }
    for (int r = 0; r < tp; r++) layer_params_free(&shards[r]);
    free(shards);
}

static void write_json(const char *path, const Options *o, int tp, const RankTimes *t, double max_err, int passed,
                       const LayerComm *lc) {
    const LayerConfig *c = &o->layer;
    FILE *f = output_open(path, "w");  // beside, then renamed: never a half-written file
    fprintf(f,
            "{\"step\": \"%s\", \"title\": \"%s\", \"gpu\": \"%s\", \"hidden\": %d, \"ffn\": %d, \"heads\": %d, "
            "\"seq\": %d, \"batch\": %d, \"dtype\": \"%s\", \"tp\": %d, \"variant\": \"%s\", \"mean_ms\": %.4f, "
            "\"collective_ms\": %.4f, \"collectives\": %d, \"bus_gbps\": %.1f, \"activation_mib\": %.1f, "
            "\"peak_mib\": %.1f, \"tflops_per_gpu\": %.2f, \"max_rel_error\": %.4g, \"check_passed\": %d, "
            "\"overlap\": %d, \"overlap_priority\": \"%s\", \"overlap_ctas\": %d, \"overlap_sm_margin\": %d, "
            "\"nccl_cta_policy\": \"%s\", "
            "\"nccl_register\": %d, \"nccl_registered_gathers\": %ld, \"fprop_chunks\": %d, "
            "\"sp_layernorm_outputs\": \"%s\", \"recompute_gelu\": %d, \"recompute_layernorm\": %d, "
            "\"activation_bytes\": %.0f, "
            "\"plain_tp_activation_mib\": %.1f}\n",
            STEP_07_TENSOR_PARALLEL.id, STEP_07_TENSOR_PARALLEL.title, gpu_description(), c->hidden, c->ffn, c->heads,
            c->seq, c->batch, dtype_name(c->dtype), tp,
            flags.block ? (flags.ln_mode == TP_LN_EXACT ? "block, exact" : "block, shard-local")
                        : tp_variant_name(&flags.variant),
            t->ms, t->collective_ms, t->collectives, t->bus_gbps, t->activation_mib, t->peak_mib,
            layer_train_flops(c) / tp / (t->ms * 1e-3) / 1e12, max_err, passed, lc->opt.overlap,
            lc->opt.side_priority_high ? "high" : "normal", lc->opt.side_ctas, lc->sm_margin_applied,
            tp_cta_policy_name(lc->opt.side_cta_policy), lc->opt.nccl_register, lc->gathers_registered,
            flags.sched.fprop_chunks,
            sp_input_name(), flags.sched.recompute_gelu, flags.sched.recompute_layernorm, t->activation_mib * 1048576.0,
            t->plain_mib);
    output_commit(f, path);
}

// One more training step, step 0 (the reference's dropout draw), run to its end: its enqueue
// under the watchdog's region, then the wait (tp_sync) under its own deadline. `what` names it
// in a timeout's message.
static void step_zero(TpLayer *layer, LayerComm *lc, TpComm *comm, void *x, void *dout, const char *what) {
    tp_watchdog_begin_region(comm, "enqueuing a step after the timed ones");
    tp_layer_train_step(layer, lc, x, dout, 0);
    tp_watchdog_end_region();
    tp_sync(comm, 0, what);
}

static int run_rank(void *arg) {
    const RankJob *job = arg;
    const Options *o = job->o;
    const LayerConfig *c = &o->layer;
    RankInfo info = {0, 1, 0, "one process"};
    rank_from_env(&info);
    const int tp = info.world, rank = info.rank, sp = flags.variant.sequence_parallel;
    // 1. The GPU and the communicator.
    const int gpus = gpu_count();
    if (gpus == 0)
        fail_user("rank %d: no usable GPU here: %s (without GPUs, `bazel test //tests/tp/...` runs this step's "
                  "tensor-parallel proof on the CPU)",
                  rank, gpu_unavailable_reason());
    if (info.local_rank >= gpus)
        fail_user("rank %d is rank %d on its machine, which has %d GPU%s: tensor-parallel size %d needs one GPU per "
                  "rank", rank, info.local_rank, gpus, gpus == 1 ? "" : "s", tp);
    gpu_require_device(info.local_rank);
    keep_nvls_off();
    TpComm comm = {NULL, rank, tp, flags.timeout_s};
    if (tp > 1) tp_comm_init(&comm, &info, flags.timeout_s);
    LayerComm lc;
    layer_comm_init(&lc, &comm, &flags.comm);
    if (rank == 0) print_header(o, &info, &lc);

    // --deterministic: the attention reads it from the config; the GEMMs' switch is the
    // process's (their plans are), set before any is planned, as the driver does for the
    // other steps (steps/driver/step_main.c). Two runs that differ only in how the
    // collectives are scheduled then save the same bits at tp 2 (gpu_run.sh tp compares them).
    gemm_set_deterministic(c->deterministic);

    // 2-3. The rank's parameters and tokens; the layer (or the block).
    const int64_t T = layer_tokens(c), h = c->hidden, Tl = (sp && !flags.block) ? T / tp : T;
    const size_t baseline = dev_bytes_in_use();
    dev_reset_peak();
    // --nccl-register: the layer's buffers, x and dout too (an all-gather reads dout), from
    // ncclMemAlloc; layer_comm registers those the all-gathers meet (layer_comm.h).
    const DevAllocator *before = flags.comm.nccl_register ? dev_set_allocator(&NCCL_MEM_ALLOCATOR) : NULL;
    void *x = dev_upload(job->in->x + (sp ? rank * Tl * h : 0), Tl * h, c->dtype);
    void *dout = dev_upload(job->in->dy + (sp ? rank * Tl * h : 0), Tl * h, c->dtype);
    TpLayer layer;
    TpBlockGpu block;
    TpBlock block_params;  // the block's unsharded parameters (random, the same on every rank)
    if (flags.block) {
        tp_block_alloc(&block_params, c->hidden, c->ffn);
        tp_block_init_random(&block_params, c->seed + 2);
        float *tensors[] = {block_params.w1, block_params.b1, block_params.gamma, block_params.beta,
                            block_params.w2, block_params.b2};
        int64_t sizes[] = {(int64_t)c->ffn * h, c->ffn, c->ffn, c->ffn, h * c->ffn, h};
        for (int i = 0; i < 6; i++) round_to_dtype(tensors[i], sizes[i], c->dtype);
        tp_block_gpu_init(&block, &block_params, T, tp, rank, flags.ln_mode, c->eps, c->dtype);
    } else {
        LayerParams shard;
        tp_shard_params(c, tp, rank, job->full, &shard);
        tp_layer_init(&layer, c, tp, rank, &flags.variant, &flags.sched, &shard);
        layer_params_free(&shard);
    }
    if (flags.comm.nccl_register) dev_set_allocator(before);

    // 4. The speedometer.
    cudaEvent_t start, stop;
    CUDA_CHECK(cudaEventCreate(&start));
    CUDA_CHECK(cudaEventCreate(&stop));
    RankTimes t = {0};
    for (int it = 0; it < o->warmup + o->iters; it++) {
        layer_comm_step_begin(&lc);
        tp_watchdog_begin_region(&comm, "enqueuing a training step");
        CUDA_CHECK(cudaEventRecord(start, 0));
        if (flags.block) {
            tp_block_gpu_forward(&block, &lc, x);
            tp_block_gpu_backward(&block, &lc, dout);
        } else {
            tp_layer_train_step(&layer, &lc, x, dout, (uint64_t)it);
        }
        CUDA_CHECK(cudaEventRecord(stop, 0));
        tp_watchdog_end_region();
        tp_sync(&comm, 0, "a training step");
        if (it < o->warmup) continue;
        float ms;
        CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
        LayerCommStats s = layer_comm_step_stats(&lc);
        t.ms += ms, t.collective_ms += s.ms;
        t.collectives = s.calls, t.collective_mb = s.bytes / 1e6;
        t.bus_gbps = s.bus_bytes;  // bytes per step; a rate below
    }
    t.ms /= o->iters, t.collective_ms /= o->iters;
    t.bus_gbps = t.collective_ms > 0 ? t.bus_gbps / (t.collective_ms * 1e-3) / 1e9 : 0.0;
    t.peak_mib = (double)(dev_peak_bytes() - baseline) / 1048576.0;
    t.activation_mib = flags.block ? 0.0 : (double)tp_layer_activation_bytes(&layer) / 1048576.0;
    if (!flags.block) {  // the yardstick of the memory goals: this layer under plain TP, default schedule
        const TpVariant plain = {flags.variant.layer, 0, 0, 0, 0};
        t.plain_mib = (double)tp_kept_activation_bytes(c, tp, &plain, NULL) / 1048576.0;
    }
    // The backward's collectives run beside its weight-gradient GEMMs, so their time is not
    // all on the step's critical path: "collectives running" is their summed duration.
    printf("rank %d: %.3f ms per forward+backward; collectives running %.3f ms (%.0f%% of the step; %d of them, "
           "%.1f MB in all, bus bandwidth %.1f GB/s); activations kept for backward %.1f MiB, peak device memory "
           "%.0f MiB\n", rank, t.ms, t.collective_ms, t.ms > 0 ? 100.0 * t.collective_ms / t.ms : 0.0,
           t.collectives, t.collective_mb, t.bus_gbps, t.activation_mib, t.peak_mib);
    if (rank == 0 && !flags.block)
        printf("activations kept per rank: %.4f of plain TP's %.1f MiB at tp %d (the same layer, default schedule)\n",
               t.activation_mib / t.plain_mib, t.plain_mib, tp);
    // The mode in the timing line itself, so that a log of several runs says which is which.
    char sched[512] = "";
    if (!flags.block) schedule_words(&lc, sched, sizeof sched);
    if (rank == 0)
        printf("Mean time: %.3f ms   (rank 0, %d steps after %d warm-up; fwd+bwd; %s, %s%s%s)\n%.1f TFLOP/s per GPU\n",
               t.ms, o->iters, o->warmup, flags.block ? "the block" : tp_variant_name(&flags.variant),
               dtype_name(c->dtype), flags.block ? "" : "; ", sched, layer_train_flops(c) / tp / (t.ms * 1e-3) / 1e12);
    if (rank == 0 && flags.comm.nccl_register) {
        char words[320];
        printf("--nccl-register: %s\n", layer_comm_registration_words(&lc, words, sizeof words));
    }
    fflush(stdout);

    // 5. --check, --save, --json, the sweep.
    int passed = -1;
    double max_err = -1.0;
    if (o->check && flags.block) {
        passed = tp_check_block_rank(c, tp, rank, &block, &block_params, job->in->x, job->in->dy, &max_err);
    } else if (o->check) {
        step_zero(&layer, &lc, &comm, x, dout, "the checked step");  // step 0, as the reference draws dropout
        passed = tp_check_layer_rank(c, tp, rank, &layer, job->full, job->in, &max_err);
    }
    fflush(stdout);
    if (o->save_path) {
        if (!o->check) {
            step_zero(&layer, &lc, &comm, x, dout, "the saved step");
        }
        LayerResults res;
        layer_results_alloc(c, &res);
        gather_results(c, &comm, &layer, &res);
        if (rank == 0) {
            save_layer_results(o->save_path, c, &res);
            printf("saved out, dx and %d gradients (gathered from %d ranks) to %s\n", NUM_PARAMS, tp, o->save_path);
        }
        layer_results_free(&res);
    }
    if (o->json_path && rank == 0) write_json(o->json_path, o, tp, &t, max_err, passed, &lc);
    if (flags.sweep) collective_sweep(&comm, c);

    layer_comm_free(&lc);  // first: it deregisters (--nccl-register) the buffers freed below
    if (flags.block) tp_block_gpu_free(&block), tp_block_free(&block_params);
    else tp_layer_free(&layer);
    dev_free(x), dev_free(dout);
    cudaEventDestroy(start), cudaEventDestroy(stop);
    if (tp > 1) tp_comm_destroy(&comm);
    return passed == 0 ? 1 : 0;
}

// ---- Before any rank starts ---------------------------------------------------------------------
// Everything that can be wrong with the command line, said once, by one process.
static int world_size(RankInfo *info, int *from_env) {
    *from_env = rank_from_env(info);
    if (flags.tp > 0 && *from_env)
        fail_user("--tp %d forks local ranks, but this process already is rank %d of %d (%s): drop --tp", flags.tp,
                  info->rank, info->world, info->source);
    return flags.tp > 0 ? flags.tp : *from_env ? info->world : 1;
}

// Neither --nccl-register nor --no-nccl-register given: sequence parallelism's all-gathers on
// registered buffers wherever they run (tp 2 or more, not --block) and NCCL can (measured on
// 2 H200s: 157 -> 123 us an all-gather of [T, h], sequence parallelism's step 1.02x -> 1.00x
// plain TP's; docs/results.md). An NCCL too old for it is said once, not refused.
static int register_by_default(int tp) {
    if (!flags.variant.sequence_parallel || flags.block || tp < 2) return 0;
    char why[320];
    if (nccl_register_unsupported(why, sizeof why)) {
        printf("note: sequence parallelism's all-gathers on unregistered buffers (%s)\n", why);
        return 0;
    }
    return 1;
}

static void refuse_what_cannot_run(const Options *o, int tp) {
    const LayerConfig *c = &o->layer;
    if (o->breakdown)
        fail_user("--breakdown times one GPU's step by category (steps 01-06); step 07 reports each rank's time in "
                  "collectives instead (its timing line): drop --breakdown");
    if (!flags.comm.overlap && overlap_knob_given())
        fail_user("%s sets up the overlap that --no-overlap turns off: give one or the other", overlap_knob_given());
    if (flags.comm.sm_margin > 0 && c->deterministic)
        fail_user("--overlap-sm-margin lets cuBLASLt pick other GEMM algorithms beside the collectives, which "
                  "--deterministic fixes (so that every schedule gives the same bits): drop one of them");
    // The default margin where it cannot apply: fixed GEMM algorithms, or nothing beside a
    // collective (--no-overlap, --block).
    if (flags.comm.sm_margin == LAYER_COMM_SM_MARGIN_AUTO && (c->deterministic || !flags.comm.overlap || flags.block))
        flags.comm.sm_margin = 0;
    // The schedule's own conflicts first (--recompute-layernorm with --keep-gathered), so that
    // following one message never leads straight to another.
    if (tp_schedule_problem(&flags.sched)) fail_user("%s", tp_schedule_problem(&flags.sched));
    if (flags.sched.sp_input == SP_KEEP_GATHERED && !flags.variant.sequence_parallel)
        fail_user("--keep-gathered chooses what sequence parallelism keeps for backward: add --sequence-parallel");
    if (flags.sched.recompute_gelu && flags.block)
        fail_user("--recompute-gelu is the layer's (FC2's input): --block has no GELU; drop one of them");
    if (flags.sched.recompute_layernorm && flags.block)
        fail_user("--recompute-layernorm is the layer's (its LayerNorms' outputs): --block's LayerNorm keeps its "
                  "output; drop one of them");
    if (flags.comm.nccl_register == 1) {  // asked for: refused where it cannot apply
        if (flags.block)
            fail_user("--nccl-register registers the layer's all-gather buffers, and --block has no all-gather: "
                      "drop one of them");
        if (!flags.variant.sequence_parallel)
            fail_user("--nccl-register registers the buffers of sequence parallelism's all-gathers (plain TP has "
                      "none): add --sequence-parallel");
        char why[320];
        if (nccl_register_unsupported(why, sizeof why)) fail_user("--nccl-register: %s", why);
    }
    if (flags.sched.fprop_chunks > 1 && (flags.variant.sequence_parallel || flags.block))
        fail_user("--fprop-chunks pipelines plain TP's forward all-reduce: drop it with --sequence-parallel (a "
                  "reduce-scatter there) and --block");
    if (flags.block) {
        if (flags.variant.layer == TP_LAYER_PARALLEL || flags.variant.sequence_parallel)
            fail_user("--block runs the Linear -> LayerNorm -> Linear block alone: drop --parallel and "
                      "--sequence-parallel");
        if (!flags.comm.overlap || overlap_knob_given())
            fail_user("--block overlaps no collective: drop %s", overlap_knob_given() ? overlap_knob_given() : "--no-overlap");
        if (o->weights_path || o->save_path)
            fail_user("--weights and --save are the layer's parameters and results; --block runs its own random block");
        const char *problem = tp_block_problem(c->hidden, c->ffn, tp);
        if (problem) fail_user("%s", problem);
    } else {
        const char *problem = tp_variant_problem(c, tp, &flags.variant);
        if (problem) fail_user("%s", problem);
        problem = row_parallel_chunks_problem(layer_tokens(c), flags.sched.fprop_chunks);
        if (problem) fail_user("%s", problem);
        const char *why = unsupported(c);
        if (why) fail_user("step %s cannot run this configuration: %s", STEP_07_TENSOR_PARALLEL.id, why);
        const int64_t slice = layer_tokens(c) / tp * c->hidden;
        if (flags.variant.sequence_parallel && slice % 16 != 0)
            fail_user("sequence parallelism: each rank's %lld elements of [T, h] must be a multiple of 16 (the "
                      "dropout kernels draw 16 at a time)", (long long)slice);
    }
    // Last: the flags' own conflicts above name the more useful fix.
    if (tp == 1 && (flags.comm.nccl_register == 1 || flags.comm.side_cta_policy != TP_CTA_POLICY_UNSET))
        fail_user("--nccl-register and --nccl-cta-policy change how the ranks' collectives run, and --tp 1 has "
                  "none: drop them or use --tp 2 or more");
    if (flags.comm.nccl_register == -1) flags.comm.nccl_register = register_by_default(tp);
    if (o->check && (double)layer_tokens(c) * c->hidden * c->ffn > 1e10)
        fail_user("--check runs the CPU reference, which would take hours at this size: add --preset small");
}

int step07_run(const Options *o) {
    const LayerConfig *c = &o->layer;
    RankInfo info;
    int from_env;
    const int tp = world_size(&info, &from_env);
    refuse_what_cannot_run(o, tp);
    require_valid_environment();  // a bad switch value, before any GPU (no CUDA call)
    // Files are read once, here, before any rank starts (the forked ranks share them), and before
    // the GPUs are counted: a bad file is reported once, as such, on any machine.
    LayerParams full;
    LayerInputs in;
    layer_params_alloc(c, &full);
    layer_inputs_alloc(c, &in);
    if (o->weights_path) {
        input_check_readable("--weights", o->weights_path);
        load_layer_params(o->weights_path, c, &full);
    }
    if (o->input_path) {
        input_check_readable("--input", o->input_path);
        load_layer_inputs(o->input_path, c, &in);
    }
    // The ranks need one GPU each. Asked in a child process: the ranks are forked from this
    // one, which must stay free of CUDA.
    if (flags.tp > 1) {
        char why[320];
        int gpus = gpu_count_without_cuda(why, sizeof why);
        if (gpus == 0)
            fail_user("--tp %d: this machine has no usable GPU: %s (without GPUs, `bazel test //tests/tp/...` runs "
                      "this step's tensor-parallel proof on the CPU)", flags.tp, why);
        if (flags.tp > gpus)
            fail_user("--tp %d needs %d GPUs, one per rank, but this machine has %d: use --tp %d or less", flags.tp,
                      flags.tp, gpus, gpus);
    }
    if (!o->weights_path) layer_params_init_random(c, c->seed, &full);
    layer_params_round(c, &full);
    if (!o->input_path) layer_inputs_init_random(c, c->seed + 1, &in);
    layer_inputs_round(c, &in);
    RankJob job = {o, &full, &in};
    int status;
    if (flags.tp > 1) {
        int port = flags.port ? flags.port : 29500 + (int)(getpid() % 1000);
        status = launch_local(flags.tp, port, run_rank, &job);
    } else {
        keep_nvls_off();
        status = run_rank(&job);
    }
    layer_params_free(&full);
    layer_inputs_free(&in);
    return status;
}
