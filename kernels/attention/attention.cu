// The attention API (attention.h): checks the problem, chooses a kernel for each pass from
// what this GPU can run, and launches it. The kernels live in flash_mma.cu (mma.sync) and
// flash_forward_wgmma.cu / flash_backward_wgmma.cu / flash_backward_swapab.cu /
// flash_backward_ws.cu (Hopper); flash_kernels.cuh is the line between them and this file.
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/gpu_arch.h"
#include "common/core/philox.h"
#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu.h"
#include "common/gpu/gpu_phase.h"
#include "kernels/attention/attention.h"
#include "kernels/attention/env_switch.h"
#include "kernels/attention/flash_kernels.cuh"
#include "kernels/device_utils.cuh"

// ---- the problem ----------------------------------------------------------------------------
extern "C" AttentionProblem attention_layer_problem(const LayerConfig *c) {
    AttentionProblem p = {};
    p.seq = c->seq, p.batch = c->batch, p.heads = c->heads, p.head_dim = layer_head_dim(c);
    p.dtype = c->dtype, p.causal = c->causal, p.deterministic = c->deterministic;
    return p;
}

extern "C" AttentionDropout attention_layer_dropout(const LayerConfig *c, uint64_t step) {
    return AttentionDropout{c->attn_dropout, c->seed, dropout_offset(step, DROPOUT_SITE_ATTENTION)};
}

static const char HEAD_DIM_UNSUPPORTED[] = "the flash-attention kernels support head_dim 64 and 128";

// A row stride is 0 (packed) or at least the packed width, in whole 16-byte chunks: the
// kernels copy rows 16 bytes at a time (cp.async, TMA), which also needs 16-byte aligned rows.
static bool row_stride_ok(int64_t stride, int64_t packed) { return stride == 0 || (stride >= packed && stride % 8 == 0); }

extern "C" const char *attention_unsupported(const AttentionProblem *p) {
    if (p->head_dim != 64 && p->head_dim != 128) {  // naming the head dim it was given
        static char why[sizeof HEAD_DIM_UNSUPPORTED + 24];
        snprintf(why, sizeof why, "%s, not %d", HEAD_DIM_UNSUPPORTED, p->head_dim);
        return why;
    }
    if (p->seq <= 0 || p->batch <= 0 || p->heads <= 0) return "attention: seq, batch and heads must be positive";
    if (p->dtype != DTYPE_FP16 && p->dtype != DTYPE_BF16) return "attention: the dtype must be fp16 or bf16";
    const int64_t hidden = (int64_t)p->heads * p->head_dim;
    if (!row_stride_ok(p->qkv_row_stride, 3 * hidden))
        return "attention: qkv_row_stride must be 0 (packed) or a multiple of 8 of at least 3 * heads * head_dim";
    if (!row_stride_ok(p->ctx_row_stride, hidden))
        return "attention: ctx_row_stride must be 0 (packed) or a multiple of 8 of at least heads * head_dim";
    const bool sharded = p->total_heads != 0 || p->first_head != 0;
    if (sharded && (p->first_head < 0 || p->first_head + p->heads > p->total_heads))
        return "attention: heads [first_head, first_head + heads) must lie within the layer's total_heads";
    if (p->deterministic != 0 && p->deterministic != 1) return "attention: deterministic must be 0 or 1";
    return NULL;
}

// ---- the choice of kernel -------------------------------------------------------------------
static AttentionKernels kernels_in_use = ATTENTION_KERNELS_BEST;

extern "C" AttentionKernels attention_set_kernels(AttentionKernels kernels) {
    const AttentionKernels previous = kernels_in_use;
    kernels_in_use = kernels;
    return previous;
}

// The mma.sync kernels' tiles, largest (fastest) first: forward K/V stages, backward keys
// per block (128 at head dim 128 only).
struct MmaTile {
    int tile;
    const char *kernel;
};
static const MmaTile FORWARD_TILES[] = {{2, "mma.sync forward (2 K/V stages)"}, {1, "mma.sync forward (1 K/V stage)"}};
static const MmaTile BACKWARD_TILES[] = {{128, "mma.sync backward (128 keys per block)"},
                                         {64, "mma.sync backward (64 keys per block)"}};
static const int NUM_TILES = 2;  // of each

extern "C" const char *attention_choose_kernel(const AttentionDevice *dev, AttentionKernels kernels,
                                               AttentionPass pass, int head_dim, AttentionKernelChoice *choice,
                                               char *why, size_t n) {
    const bool forward = pass == ATTENTION_FORWARD;
    if (head_dim != 64 && head_dim != 128) {
        snprintf(why, n, "%s (got %d)", HEAD_DIM_UNSUPPORTED, head_dim);
        return why;
    }
    if (dev->cc < GPU_ARCH_MIN) {
        snprintf(why, n, "attention: the kernels need compute capability %d.%d or newer (cp.async, bf16 mma.sync); "
                 "this GPU is %d.%d", GPU_ARCH_MIN / 10, GPU_ARCH_MIN % 10, dev->cc / 10, dev->cc % 10);
        return why;
    }
    // Hopper's kernels: on compute capability 9.0 only, and only if the running code holds
    // their sm_90a bodies; both passes at both head dims.
    if (kernels == ATTENTION_KERNELS_BEST && gpu_arch_has_wgmma(dev->cc) && dev->wgmma_image_loaded) {
        const size_t smem =
            forward ? flash_forward_wgmma_smem_bytes(head_dim, 2, 128) : flash_backward_wgmma_smem_bytes(head_dim);
        if (smem <= dev->max_smem_per_block) {
            *choice = AttentionKernelChoice{forward ? "wgmma forward" : "wgmma backward", 1, 0, smem};
            return NULL;
        }
    }
    // mma.sync: the largest tile that fits.
    size_t limit = dev->max_smem_per_block;
    const size_t small = gpu_arch_max_smem_per_block(89);  // sm_86 / sm_89: 99 KiB
    if (kernels == ATTENTION_KERNELS_MMA_SYNC_SMALL_TILES && small < limit) limit = small;
    const MmaTile *tiles = forward ? FORWARD_TILES : BACKWARD_TILES;
    size_t smem = 0;
    for (int i = 0; i < NUM_TILES; i++) {
        if (!forward && tiles[i].tile == 128 && head_dim != 128) continue;
        smem = forward ? flash_forward_mma_smem_bytes(head_dim, tiles[i].tile)
                       : flash_backward_mma_smem_bytes(head_dim, tiles[i].tile);
        if (smem <= limit) {
            *choice = AttentionKernelChoice{tiles[i].kernel, 0, tiles[i].tile, smem};
            return NULL;
        }
    }
    snprintf(why, n, "attention: the %s at head dim %d needs %zu bytes of shared memory per block; the limit here "
             "is %zu", tiles[NUM_TILES - 1].kernel, head_dim, smem, limit);
    return why;
}

// This GPU as the choice sees it, asked once. The probe runs only on compute capability 9.0.
static AttentionDevice this_device(void) {
    static AttentionDevice device;
    static bool known = false;
    if (!known) {
        device.cc = gpu_effective_cc();
        device.wgmma_image_loaded = gpu_arch_has_wgmma(device.cc) ? flash_wgmma_image_loaded() : 0;
        device.max_smem_per_block = gpu_max_smem_per_block();
        known = true;
    }
    return device;
}

// ---- the switches (attention.h): environment variables read once (env_switch.h) -----------
// The best set's backward at head dim 64 (ATTENTION_D64_BACKWARD, attention.h; read once):
// unset, each pass's faster wgmma kernel (below); or the wgmma kernel with dQ over each
// warpgroup's own keys, or by turns, for every pass; or the mma.sync kernel.
typedef enum { D64_WGMMA_FASTEST, D64_WGMMA_OWN_KEYS, D64_WGMMA_BY_TURNS, D64_MMA_SYNC } D64Backward;

static const EnvChoice d64_backward_choices[] = {
    {"wgmma", D64_WGMMA_OWN_KEYS}, {"wgmma-turns", D64_WGMMA_BY_TURNS}, {"mma", D64_MMA_SYNC}};
static Switch d64_backward_switch = SWITCH("ATTENTION_D64_BACKWARD", d64_backward_choices, D64_WGMMA_FASTEST);

static D64Backward d64_backward(void) { return (D64Backward)switch_value(d64_backward_switch); }

// How the wgmma backward at head dim 64 computes dQ (flash_kernels.cuh). Unset, the faster
// way for the pass measured on an H200 (2026-11-29, b 4, h 32, s 2048, fp16): own keys by
// default (1.28 ms against 1.36 by turns), by turns when deterministic (1.60 ms against 1.76:
// its slices hold 128 keys, so half as many are stored and summed).
static FlashDq64 wgmma_dq64(int deterministic) {
    switch (d64_backward()) {
        case D64_WGMMA_BY_TURNS: return FLASH_DQ64_BY_TURNS;
        case D64_WGMMA_FASTEST: return deterministic ? FLASH_DQ64_BY_TURNS : FLASH_DQ64_OWN_KEYS;
        default: return FLASH_DQ64_OWN_KEYS;
    }
}

// The swapAB backward (ATTENTION_BACKWARD_SWAPAB, attention.h): read once, at the first use or
// setter call.
static const EnvChoice backward_swapab_choices[] = {{"1", ATTENTION_SWAPAB_WHERE_SUPPORTED},
                                                     {"0", ATTENTION_SWAPAB_NEVER}};
static Switch backward_swapab_switch = SWITCH("ATTENTION_BACKWARD_SWAPAB", backward_swapab_choices,
                                              ATTENTION_SWAPAB_POLICY);

static AttentionBackwardSwapAB backward_swapab(void) {
    return (AttentionBackwardSwapAB)switch_value(backward_swapab_switch);
}

extern "C" AttentionBackwardSwapAB attention_set_backward_swapab(AttentionBackwardSwapAB which) {
    if (which != ATTENTION_SWAPAB_POLICY && which != ATTENTION_SWAPAB_NEVER &&
        which != ATTENTION_SWAPAB_WHERE_SUPPORTED)
        fail_user("attention_set_backward_swapab: which must be an AttentionBackwardSwapAB, not %d", (int)which);
    return (AttentionBackwardSwapAB)switch_set(backward_swapab_switch, which);
}

// Whether the best set's wgmma backward at head dim d is the swapAB kernel: as the setting
// says; the policy (attention.h) where it was measured faster.
static bool backward_swapab_at(int head_dim) {
    switch (backward_swapab()) {
        case ATTENTION_SWAPAB_NEVER: return false;
        case ATTENTION_SWAPAB_WHERE_SUPPORTED: return true;
        default: return head_dim == 64 && d64_backward() == D64_WGMMA_FASTEST;
    }
}

// Whether the backward of kernel choice `k` at head dim d runs the swapAB kernel: a wgmma
// backward where the setting puts it, dropping or not.
static bool backward_runs_swapab(const AttentionKernelChoice &k, int head_dim) {
    return k.wgmma && backward_swapab_at(head_dim);
}

// The warp-specialised backward at head dim 128 (ATTENTION_BACKWARD_WS, attention.h): read
// once, at the first use or setter call. On by default: measured against flash_backward_wgmma.cu on
// an H200 (docs/results.md#h200-seventh), faster in every row (fp16 / bf16 TFLOP/s: 434-466
// / 472-474 against 423-438 / 422-436; dropout 389-400 against 361-372; causal 364-382 against
// 350-358).
static const EnvChoice backward_ws_choices[] = {
    {"1", ATTENTION_BACKWARD_WS_ON},
    {"0", ATTENTION_BACKWARD_WS_OFF},
    {"64", ATTENTION_BACKWARD_WS_64},
    {"80", ATTENTION_BACKWARD_WS_80}};
static Switch backward_ws_switch = SWITCH("ATTENTION_BACKWARD_WS", backward_ws_choices, ATTENTION_BACKWARD_WS_ON);

static AttentionBackwardWS backward_ws(void) { return (AttentionBackwardWS)switch_value(backward_ws_switch); }

extern "C" AttentionBackwardWS attention_set_backward_ws(AttentionBackwardWS which) {
    if (which != ATTENTION_BACKWARD_WS_OFF && which != ATTENTION_BACKWARD_WS_ON && which != ATTENTION_BACKWARD_WS_64 &&
        which != ATTENTION_BACKWARD_WS_80)
        fail_user("attention_set_backward_ws: which must be an AttentionBackwardWS, not %d", (int)which);
    return (AttentionBackwardWS)switch_set(backward_ws_switch, which);
}

// The 80-query backward's tile when causal and not dropping (ATTENTION_BACKWARD_CAUSAL_TILE,
// attention.h): read once, at the first use or setter call. 80 by default: the 64-query tiles
// measured even (H200, docs/results.md#h200-nineteenth).
static const EnvChoice backward_causal_tile_choices[] = {{"80", ATTENTION_BACKWARD_CAUSAL_TILE_80},
                                                         {"64", ATTENTION_BACKWARD_CAUSAL_TILE_64}};
static Switch backward_causal_tile_switch =
    SWITCH("ATTENTION_BACKWARD_CAUSAL_TILE", backward_causal_tile_choices, ATTENTION_BACKWARD_CAUSAL_TILE_80);

static AttentionBackwardCausalTile backward_causal_tile(void) {
    return (AttentionBackwardCausalTile)switch_value(backward_causal_tile_switch);
}

extern "C" AttentionBackwardCausalTile attention_set_backward_causal_tile(AttentionBackwardCausalTile which) {
    if (which != ATTENTION_BACKWARD_CAUSAL_TILE_80 && which != ATTENTION_BACKWARD_CAUSAL_TILE_64)
        fail_user("attention_set_backward_causal_tile: which must be an AttentionBackwardCausalTile, not %d",
                  (int)which);
    return (AttentionBackwardCausalTile)switch_set(backward_causal_tile_switch, which);
}

// The warp-specialised backward persistent when not causal (ATTENTION_BACKWARD_PERSISTENT,
// attention.h, which gives the figures): read once, at the first use or setter call.
static const EnvChoice backward_persistent_choices[] = {{"1", ATTENTION_BACKWARD_PERSISTENT_ON},
                                                        {"0", ATTENTION_BACKWARD_PERSISTENT_OFF}};
static Switch backward_persistent_switch =
    SWITCH("ATTENTION_BACKWARD_PERSISTENT", backward_persistent_choices, ATTENTION_BACKWARD_PERSISTENT_ON);

static AttentionBackwardPersistent backward_persistent(void) {
    return (AttentionBackwardPersistent)switch_value(backward_persistent_switch);
}

static int backward_persistent_max_ctas = 0;  // 0: one CTA per SM

// The most CTAs a persistent backward launch may take (attention.h), INT_MAX for one per SM; 0
// when ATTENTION_BACKWARD_PERSISTENT is off. The kernels add their own conditions (the
// warp-specialised: not causal; swapAB: d 64, neither causal nor deterministic).
static int backward_persistent_ctas(void) {
    if (backward_persistent() != ATTENTION_BACKWARD_PERSISTENT_ON) return 0;
    return backward_persistent_max_ctas > 0 ? backward_persistent_max_ctas : INT_MAX;
}

extern "C" AttentionBackwardPersistent attention_set_backward_persistent(AttentionBackwardPersistent which,
                                                                         int max_ctas) {
    if ((which != ATTENTION_BACKWARD_PERSISTENT_OFF && which != ATTENTION_BACKWARD_PERSISTENT_ON) || max_ctas < 0)
        fail_user("attention_set_backward_persistent: which must be an AttentionBackwardPersistent and max_ctas >= 0, "
                  "not %d and %d", (int)which, max_ctas);
    backward_persistent_max_ctas = max_ctas;
    return (AttentionBackwardPersistent)switch_set(backward_persistent_switch, which);
}

// Whether a warp-specialised backward runs the 80-query kernel (flash_backward_ws_swapab.cu) rather
// than the 64-query one (flash_backward_ws.cu): ON, when not dropping; 80, always.
static bool backward_ws_runs_80(bool dropping) {
    return backward_ws() == ATTENTION_BACKWARD_WS_80 || (backward_ws() == ATTENTION_BACKWARD_WS_ON && !dropping);
}

// Whether the backward of kernel choice `k` at head dim d runs the warp-specialised kernel: a
// wgmma backward at d 128, not deterministic (the kernel has no deterministic variant), where
// the setting says so - before the swapAB kernel (backward_runs_swapab).
static bool backward_runs_ws(const AttentionKernelChoice &k, int head_dim, int deterministic) {
    return k.wgmma && head_dim == 128 && !deterministic && backward_ws() != ATTENTION_BACKWARD_WS_OFF;
}

// The best set's forward at head dim 64 (ATTENTION_D64_FORWARD, attention.h): read once,
// at the first use or setter call. Three consumer warpgroups by default (measured faster, attention.h).
static const EnvChoice d64_forward_choices[] = {{"wg2", ATTENTION_D64_FORWARD_WG2}, {"wg3", ATTENTION_D64_FORWARD_WG3}};
static Switch d64_forward_switch = SWITCH("ATTENTION_D64_FORWARD", d64_forward_choices, ATTENTION_D64_FORWARD_WG3);

static AttentionD64Forward d64_forward(void) { return (AttentionD64Forward)switch_value(d64_forward_switch); }

extern "C" AttentionD64Forward attention_set_d64_forward(AttentionD64Forward which) {
    if (which != ATTENTION_D64_FORWARD_WG2 && which != ATTENTION_D64_FORWARD_WG3)
        fail_user("attention_set_d64_forward: which must be an AttentionD64Forward, not %d", (int)which);
    return (AttentionD64Forward)switch_set(d64_forward_switch, which);
}

// Consumer warpgroups of the wgmma forward at head dim d.
static int wgmma_forward_consumers(int head_dim) {
    return head_dim == 64 && d64_forward() == ATTENTION_D64_FORWARD_WG3 ? 3 : 2;
}

// The wgmma forward's order of causal query blocks (ATTENTION_CAUSAL_ORDER, attention.h): read
// once, at the first use or setter call.
static const EnvChoice causal_order_choices[] = {{"heavy-first", ATTENTION_CAUSAL_HEAVY_FIRST},
                                                  {"natural", ATTENTION_CAUSAL_NATURAL},
                                                  {"heavy-first-per-head", ATTENTION_CAUSAL_HEAVY_FIRST_PER_HEAD}};
static Switch causal_order_switch = SWITCH("ATTENTION_CAUSAL_ORDER", causal_order_choices, ATTENTION_CAUSAL_HEAVY_FIRST);

static AttentionCausalOrder causal_order(void) { return (AttentionCausalOrder)switch_value(causal_order_switch); }

extern "C" AttentionCausalOrder attention_set_causal_order(AttentionCausalOrder order) {
    if (order != ATTENTION_CAUSAL_HEAVY_FIRST && order != ATTENTION_CAUSAL_NATURAL &&
        order != ATTENTION_CAUSAL_HEAVY_FIRST_PER_HEAD)
        fail_user("attention_set_causal_order: order must be an AttentionCausalOrder, not %d", (int)order);
    return (AttentionCausalOrder)switch_set(causal_order_switch, order);
}

// Whether the wgmma forward runs persistent by default (ATTENTION_PERSISTENT_POLICY,
// attention.h), and with which schedule (persistent_schedule_for, below). Measured on an H200
// (b 4, h 32, s 2048, TFLOP/s, fp16, not persistent -> persistent, same call; docs/results.md):
//   not dropping: d 128 564 -> 582-593, d 64 (3 consumers) 430 -> 471-476;
//   dropping:     d 128 429 -> 437 with the static schedule, 383 with the dynamic one
//                 (the 3-consumer kernel, d 64's default, has no persistent variant);
//   causal:       d 128 461 -> 409 with the static schedule (zig-zag rounds or not), 499 with
//                 the dynamic one (bf16 470 -> 514); d 64 317 -> 342 static, 357 dynamic.
// So: persistent wherever it exists, the dynamic schedule when causal - which makes POLICY the
// same as WHERE_SUPPORTED today (ATTENTION_FORWARD_PERSISTENT=0 is the comparison that
// remains). Causal with dropout was not measured; it takes the causal choice.
static bool forward_persistent_for(int head_dim, bool causal, bool dropping) {
    (void)head_dim, (void)causal, (void)dropping;
    return true;
}

// The wgmma forward persistent or not (ATTENTION_FORWARD_PERSISTENT, attention.h): read once,
// at the first use or setter call; and the most CTAs it may use (0: one per SM; the setter's).
// Unset: the measured policy (forward_persistent_for).
static const EnvChoice forward_persistent_choices[] = {{"1", ATTENTION_PERSISTENT_WHERE_SUPPORTED},
                                                        {"0", ATTENTION_PERSISTENT_NEVER}};
static Switch forward_persistent_switch = SWITCH("ATTENTION_FORWARD_PERSISTENT", forward_persistent_choices,
                                                 ATTENTION_PERSISTENT_POLICY);
static int forward_persistent_max_ctas = 0;

static AttentionForwardPersistent forward_persistent(void) {
    return (AttentionForwardPersistent)switch_value(forward_persistent_switch);
}

extern "C" AttentionForwardPersistent attention_set_forward_persistent(AttentionForwardPersistent which,
                                                                       int max_ctas) {
    if ((which != ATTENTION_PERSISTENT_POLICY && which != ATTENTION_PERSISTENT_NEVER &&
         which != ATTENTION_PERSISTENT_WHERE_SUPPORTED) ||
        max_ctas < 0)
        fail_user("attention_set_forward_persistent: which must be an AttentionForwardPersistent and max_ctas >= 0, "
                  "not %d and %d",
                  (int)which, max_ctas);
    forward_persistent_max_ctas = max_ctas;
    return (AttentionForwardPersistent)switch_set(forward_persistent_switch, which);
}

// The persistent wgmma forward's schedule (ATTENTION_PERSISTENT_SCHEDULE, attention.h): read
// once, at the first use or setter call. By default the policy: dynamic when causal (the measured
// figures are above forward_persistent_for).
static const EnvChoice persistent_schedule_choices[] = {{"static", ATTENTION_SCHEDULE_STATIC},
                                                         {"dynamic", ATTENTION_SCHEDULE_DYNAMIC}};
static Switch persistent_schedule_switch = SWITCH("ATTENTION_PERSISTENT_SCHEDULE", persistent_schedule_choices,
                                                  ATTENTION_SCHEDULE_POLICY);

static AttentionPersistentSchedule persistent_schedule(void) {
    return (AttentionPersistentSchedule)switch_value(persistent_schedule_switch);
}

// Whether a problem, causal or not, takes the dynamic schedule.
static bool persistent_schedule_dynamic(bool causal) {
    const AttentionPersistentSchedule s = persistent_schedule();
    return s == ATTENTION_SCHEDULE_DYNAMIC || (s == ATTENTION_SCHEDULE_POLICY && causal);
}

extern "C" AttentionPersistentSchedule attention_set_persistent_schedule(AttentionPersistentSchedule which) {
    if (which != ATTENTION_SCHEDULE_POLICY && which != ATTENTION_SCHEDULE_STATIC && which != ATTENTION_SCHEDULE_DYNAMIC)
        fail_user("attention_set_persistent_schedule: which must be an AttentionPersistentSchedule, not %d",
                  (int)which);
    return (AttentionPersistentSchedule)switch_set(persistent_schedule_switch, which);
}

// Whether the wgmma forward with `consumers` consumers runs persistent for a problem causal or
// not, dropping or not: as the setting says, where the kernel has the persistent variant.
static bool forward_runs_persistent(int head_dim, int consumers, bool causal, bool dropping) {
    if (!flash_forward_wgmma_has_persistent(consumers, dropping)) return false;
    switch (forward_persistent()) {
        case ATTENTION_PERSISTENT_NEVER: return false;
        case ATTENTION_PERSISTENT_WHERE_SUPPORTED: return true;
        default: return forward_persistent_for(head_dim, causal, dropping);
    }
}

// What flash_forward_wgmma takes: 0, not persistent; else the most CTAs (it also stops at one
// per SM).
static int forward_persistent_ctas(int head_dim, int consumers, const FlashParams &p) {
    if (!forward_runs_persistent(head_dim, consumers, p.causal != 0, p.p_drop > 0.0f)) return 0;
    return forward_persistent_max_ctas > 0 ? forward_persistent_max_ctas : INT_MAX;
}

// The wgmma forward's name in tables and messages (attention_kernel_name knows the head dim but
// not the problem): which consumers, in which of the four cases (causal or not, dropping or
// not) it runs persistent, and with which schedule (nothing said: static).
static const char *wgmma_forward_name(int head_dim, int consumers) {
    static const char *const NAMES[2][6] = {
        {"wgmma forward", "wgmma forward (persistent)", "wgmma forward (persistent when not dropping)",
         "wgmma forward (persistent when neither causal nor dropping)", "wgmma forward (persistent in some cases)",
         "wgmma forward (persistent when not causal)"},
        {"wgmma forward (3 consumers)", "wgmma forward (3 consumers; persistent)",
         "wgmma forward (3 consumers; persistent when not dropping)",
         "wgmma forward (3 consumers; persistent when neither causal nor dropping)",
         "wgmma forward (3 consumers; persistent in some cases)",
         "wgmma forward (3 consumers; persistent when not causal)"},
    };
    // One bit per case: 1 plain, 2 causal, 4 dropping, 8 causal and dropping.
    int cases = 0;
    for (int causal = 0; causal < 2; causal++)
        for (int dropping = 0; dropping < 2; dropping++)
            if (forward_runs_persistent(head_dim, consumers, causal, dropping)) cases |= 1 << (causal + 2 * dropping);
    const int which = cases == 0 ? 0 : cases == 15 ? 1 : cases == 3 ? 2 : cases == 1 ? 3 : cases == 5 ? 5 : 4;
    const char *name = NAMES[consumers == 3][which];
    const AttentionPersistentSchedule schedule = persistent_schedule();
    if (which == 0 || schedule == ATTENTION_SCHEDULE_STATIC) return name;
    // The same name with the schedule before its closing parenthesis, one buffer per name and
    // schedule, so that names returned earlier stay valid.
    static char dynamic_names[2][2][6][128];
    const int policy = schedule == ATTENTION_SCHEDULE_POLICY;
    char *dynamic = dynamic_names[policy][consumers == 3][which];
    if (!dynamic[0])
        snprintf(dynamic, sizeof dynamic_names[0][0][0], "%.*s; %s)", (int)strlen(name) - 1, name,
                 policy ? "dynamic schedule when causal" : "dynamic schedule");
    return dynamic;
}

// The wgmma forward's keys per tile at head dim 128 (ATTENTION_FORWARD_BLOCK_N, attention.h):
// read once, at the first use or setter call. 176 by default since it was measured faster (H200,
// 2026-11-30: fp16 618-625 vs 584-586 TFLOP/s, bf16 646 vs 597; docs/results.md #h200-eighth).
static const EnvChoice forward_block_n_choices[] = {{"128", ATTENTION_FORWARD_BLOCK_N_128},
                                                     {"176", ATTENTION_FORWARD_BLOCK_N_176}};
static Switch forward_block_n_switch = SWITCH("ATTENTION_FORWARD_BLOCK_N", forward_block_n_choices,
                                              ATTENTION_FORWARD_BLOCK_N_176);

static AttentionForwardBlockN forward_block_n_setting(void) {
    return (AttentionForwardBlockN)switch_value(forward_block_n_switch);
}

extern "C" AttentionForwardBlockN attention_set_forward_block_n(AttentionForwardBlockN which) {
    if (which != ATTENTION_FORWARD_BLOCK_N_128 && which != ATTENTION_FORWARD_BLOCK_N_176)
        fail_user("attention_set_forward_block_n: which must be an AttentionForwardBlockN (128 or 176), not %d",
                  (int)which);
    return (AttentionForwardBlockN)switch_set(forward_block_n_switch, which);
}

// Whether the wide tiles can run at all for the wgmma forward at head dim d (with its
// consumers): d 128 with two consumers, where the setting asks for them.
static bool forward_wide_tiles_at(int head_dim, int consumers) {
    return head_dim == 128 && consumers == 2 && forward_block_n_setting() == ATTENTION_FORWARD_BLOCK_N_176;
}

// What flash_forward_wgmma takes: the keys per tile for this problem - 176 where the setting
// asks and the problem is neither causal nor dropping, else 128 (flash_forward_wgmma.cu says
// why neither mask takes the wide tiles).
static int forward_block_n(int head_dim, int consumers, const FlashParams &p) {
    return forward_wide_tiles_at(head_dim, consumers) && !p.causal && !(p.p_drop > 0.0f) ? 176 : 128;
}

// A kernel's name with a note on its tiles added (attention_kernel_name): "wgmma forward" ->
// "wgmma forward (176-key tiles when neither causal nor dropping)", "wgmma forward (persistent)"
// -> "wgmma forward (persistent; 176-key tiles ...)". Each name's buffer is kept (a few names
// in all), so that names returned earlier stay valid.
static const char *with_note(const char *name, const char *note) {
    enum { NAMES = 32 };
    static struct {
        const char *from, *note;
        char to[224];
    } made[NAMES];
    for (int i = 0; i < NAMES; i++) {
        if (made[i].from == name && made[i].note == note) return made[i].to;
        if (made[i].from) continue;
        const size_t length = strlen(name);
        if (length > 0 && name[length - 1] == ')')
            snprintf(made[i].to, sizeof made[i].to, "%.*s; %s)", (int)length - 1, name, note);
        else
            snprintf(made[i].to, sizeof made[i].to, "%s (%s)", name, note);
        made[i].from = name, made[i].note = note;
        return made[i].to;
    }
    fail_user("attention: more kernel names with notes than with_note keeps (%d)", NAMES);
}

static const char WIDE_FORWARD_TILES[] = "176-key tiles when neither causal nor dropping";
static const char CAUSAL_BACKWARD_TILES[] = "swapAB tiles of 64 queries when causal, not dropping";

extern "C" void attention_require_valid_switches(void) {
    d64_forward();
    d64_backward();
    causal_order();
    forward_persistent();
    persistent_schedule();
    backward_swapab();
    backward_ws();
    backward_causal_tile();
    backward_persistent();
    forward_block_n_setting();
}

static AttentionKernelChoice choose(AttentionPass pass, int head_dim) {
    const AttentionDevice device = this_device();
    const bool best_d64_backward =
        kernels_in_use == ATTENTION_KERNELS_BEST && pass == ATTENTION_BACKWARD && head_dim == 64;
    // ATTENTION_D64_BACKWARD=mma: what the best set ran at d 64 before the wgmma backward.
    const AttentionKernels kernels =
        best_d64_backward && d64_backward() == D64_MMA_SYNC ? ATTENTION_KERNELS_MMA_SYNC : kernels_in_use;
    AttentionKernelChoice choice;
    char why[320];
    if (attention_choose_kernel(&device, kernels, pass, head_dim, &choice, why, sizeof why))
        fail_user("%s (%s)", why, gpu_description());
    if (best_d64_backward && choice.wgmma && wgmma_dq64(0) == FLASH_DQ64_BY_TURNS)
        choice.kernel = "wgmma backward (dQ by turns)";  // for attention_kernel_name (not deterministic)
    if (pass == ATTENTION_BACKWARD && choice.wgmma && backward_swapab_at(head_dim)) {
        choice.kernel = head_dim == 64 && backward_persistent() == ATTENTION_BACKWARD_PERSISTENT_ON
                            ? "wgmma backward (swapAB; persistent when neither causal nor deterministic)"
                            : "wgmma backward (swapAB)";
        const size_t smem = flash_backward_swapab_smem_bytes(head_dim);
        if (smem > device.max_smem_per_block)  // not on a Hopper GPU (227 KiB)
            fail_user("attention: the %s needs %zu bytes of shared memory per block; the limit here is %zu (%s)",
                      choice.kernel, smem, device.max_smem_per_block, gpu_description());
        if (smem > choice.smem_bytes) choice.smem_bytes = smem;
    }
    // The warp-specialised kernel: named for the tables with what runs when deterministic.
    if (pass == ATTENTION_BACKWARD && backward_runs_ws(choice, head_dim, 0)) {
        const bool persistent = backward_persistent() == ATTENTION_BACKWARD_PERSISTENT_ON;
        choice.kernel = backward_swapab_at(head_dim)
                            ? (persistent ? "wgmma backward (warp-specialised, persistent when not causal; swapAB when "
                                            "deterministic)"
                                          : "wgmma backward (warp-specialised; swapAB when deterministic)")
                            : (persistent ? "wgmma backward (warp-specialised, persistent when not causal; not when "
                                            "deterministic)"
                                          : "wgmma backward (warp-specialised; not when deterministic)");
        if (backward_ws() == ATTENTION_BACKWARD_WS_ON || backward_ws() == ATTENTION_BACKWARD_WS_80) {
            // [dropping too][persistent][swapAB when deterministic]
            static const char *const names80[2][2][2] = {
                {{"wgmma backward (warp-specialised, 80-query swapAB, 64-query when dropping; not when deterministic)",
                  "wgmma backward (warp-specialised, 80-query swapAB, 64-query when dropping; swapAB when "
                  "deterministic)"},
                 {"wgmma backward (warp-specialised, 80-query swapAB, 64-query when dropping, persistent when not "
                  "causal; not when deterministic)",
                  "wgmma backward (warp-specialised, 80-query swapAB, 64-query when dropping, persistent when not "
                  "causal; swapAB when deterministic)"}},
                {{"wgmma backward (warp-specialised, 80-query swapAB; not when deterministic)",
                  "wgmma backward (warp-specialised, 80-query swapAB; swapAB when deterministic)"},
                 {"wgmma backward (warp-specialised, 80-query swapAB, persistent when not causal; not when "
                  "deterministic)",
                  "wgmma backward (warp-specialised, 80-query swapAB, persistent when not causal; swapAB when "
                  "deterministic)"}}};
            choice.kernel =
                names80[backward_ws() == ATTENTION_BACKWARD_WS_80][persistent][backward_swapab_at(head_dim)];
            if (backward_causal_tile() == ATTENTION_BACKWARD_CAUSAL_TILE_64)
                choice.kernel = with_note(choice.kernel, CAUSAL_BACKWARD_TILES);
        }
        // Either warp-specialised kernel may run (the 80-query one, or the 64-query one when
        // dropping): the larger's shared memory.
        const size_t ws64 = flash_backward_ws_smem_bytes(), ws80 = flash_backward_ws_swapab_smem_bytes();
        const size_t smem = ws64 > ws80 ? ws64 : ws80;
        if (smem > device.max_smem_per_block)  // not on a Hopper GPU (227 KiB)
            fail_user("attention: the %s needs %zu bytes of shared memory per block; the limit here is %zu (%s)",
                      choice.kernel, smem, device.max_smem_per_block, gpu_description());
        if (smem > choice.smem_bytes) choice.smem_bytes = smem;
    }
    if (pass == ATTENTION_FORWARD && choice.wgmma && wgmma_forward_consumers(head_dim) == 3) {
        choice.kernel = "wgmma forward (3 consumers)";
        choice.smem_bytes = flash_forward_wgmma_smem_bytes(head_dim, 3, 128);
        if (choice.smem_bytes > device.max_smem_per_block)  // not on a Hopper GPU (227 KiB)
            fail_user("attention: the %s needs %zu bytes of shared memory per block; the limit here is %zu (%s)",
                      choice.kernel, choice.smem_bytes, device.max_smem_per_block, gpu_description());
    }
    // Every switch read here, so that a bad value stops on any GPU and with any set of kernels,
    // not only where it applies (attention.h: "Any other value stops with a message").
    attention_require_valid_switches();
    // The forward's persistent kernel, named for the tables: the benchmark and the tests show
    // which setting ran.
    if (pass == ATTENTION_FORWARD && choice.wgmma)
        choice.kernel = wgmma_forward_name(head_dim, wgmma_forward_consumers(head_dim));
    // The wide tiles (ATTENTION_FORWARD_BLOCK_N), named likewise; the shared memory, the larger
    // of the two kernels' (which one runs depends on the problem).
    if (pass == ATTENTION_FORWARD && choice.wgmma &&
        forward_wide_tiles_at(head_dim, wgmma_forward_consumers(head_dim))) {
        choice.kernel = with_note(choice.kernel, WIDE_FORWARD_TILES);
        const size_t smem = flash_forward_wgmma_smem_bytes(head_dim, 2, 176);
        if (smem > device.max_smem_per_block)  // not on a Hopper GPU (227 KiB)
            fail_user("attention: the %s needs %zu bytes of shared memory per block; the limit here is %zu (%s)",
                      choice.kernel, smem, device.max_smem_per_block, gpu_description());
        if (smem > choice.smem_bytes) choice.smem_bytes = smem;
    }
    return choice;
}

extern "C" const char *attention_kernel_name(AttentionPass pass, int head_dim) { return choose(pass, head_dim).kernel; }

// ---- the passes -----------------------------------------------------------------------------
static void require_supported(const AttentionProblem *p, const char *who) {
    const char *why = attention_unsupported(p);
    if (why) DIE("%s: %s", who, why);
}

static void require_aligned(const void *const *pointers, int n, const char *who) {
    for (int i = 0; i < n; i++)
        if ((uintptr_t)pointers[i] % 16 != 0) DIE("%s: tensor %d of its arguments is not 16-byte aligned", who, i + 1);
}

// What every kernel is given: the strides resolved, the dropout seed's round keys, the head range.
static FlashParams flash_params(const AttentionProblem *p, const AttentionDropout *dropout) {
    const int64_t hidden = (int64_t)p->heads * p->head_dim;
    const AttentionDropout none = {0.0f, 0, 0};
    const AttentionDropout *d = dropout ? dropout : &none;
    FlashParams f;
    f.seq = p->seq, f.batch = p->batch, f.heads = p->heads;
    f.qkv_row = p->qkv_row_stride ? p->qkv_row_stride : 3 * hidden;
    f.ctx_row = p->ctx_row_stride ? p->ctx_row_stride : hidden;
    f.p_drop = d->p, f.causal = p->causal;
    f.keys = philox_keys(d->seed), f.offset = d->offset;
    f.drop = HeadRange{p->total_heads ? p->total_heads : p->heads, p->first_head};
    return f;
}

template <typename T, int D>
static void forward(const FwdArgs &a, const AttentionKernelChoice &k) {
    if (k.wgmma)
        flash_forward_wgmma<T, D>(a, wgmma_forward_consumers(D), forward_block_n(D, wgmma_forward_consumers(D), a),
                                  causal_order(), forward_persistent_ctas(D, wgmma_forward_consumers(D), a),
                                  persistent_schedule_dynamic(a.causal != 0));
    else
        flash_forward_mma<T, D>(a, k.tile);
}

// Keys per dQ slice of the backward kernel `k` when deterministic (one slice per that many
// keys): mma.sync, its keys per block; swapAB, 128 (a block's); the other wgmma backward, 128
// (a block's), or 64 at d 64 with dQ over each warpgroup's own keys (a warpgroup's).
static int dq_slice_keys(const AttentionKernelChoice &k, int head_dim, int deterministic) {
    if (backward_runs_swapab(k, head_dim)) return flash_backward_swapab_slice_keys();
    return k.wgmma ? flash_backward_wgmma_slice_keys(head_dim, wgmma_dq64(deterministic)) : k.tile;
}

// Dsum and dQ's zeroed accumulator first (and, for the swapAB and the warp-specialised
// kernels, their padded tile statistics: a.tile_stats, not NULL exactly when one of them runs),
// then the kernel for dK, dV (and dQ's partial sums), then dQ converted to T into dqkv.
// Deterministic: the accumulator is not zeroed (every block overwrites its own slice), and the
// last pass sums the slices in key-block order.
template <typename T, int D>
static void backward(const BwdArgs &a, const void *ctx, float *dsum, float *tile_stats,
                     const AttentionKernelChoice &k) {
    flash_backward_prepare<T, D>(a, ctx, a.dctx, dsum, a.deterministic ? nullptr : a.dq_accum, a.lse, tile_stats);
    if (backward_runs_ws(k, D, a.deterministic)) {
        // Persistent when not causal (attention.h): at most this many CTAs (0: no launch of its own).
        if constexpr (D == 128) {
            if (backward_ws_runs_80(a.p_drop > 0.0f))
                flash_backward_ws_swapab<T>(a, causal_order(), a.causal ? 0 : backward_persistent_ctas(),
                                            backward_causal_tile() == ATTENTION_BACKWARD_CAUSAL_TILE_64 ? 64 : 80);
            else
                flash_backward_ws<T>(a, causal_order(), a.causal ? 0 : backward_persistent_ctas());
        }
    } else if (tile_stats) {
        // Persistent at d 64 on the fast path (attention.h): at most this many CTAs (0: none).
        flash_backward_swapab<T, D>(a, causal_order(), backward_persistent_ctas());
    } else if (k.wgmma) {
        flash_backward_wgmma<T, D>(a, wgmma_dq64(a.deterministic), causal_order());
    } else {
        flash_backward_mma<T, D>(a, k.tile);
    }
    if (a.deterministic)
        flash_backward_sum_dq_slices<T, D>(a, a.dq_accum, dq_slice_keys(k, D, 1), a.dqkv);
    else
        flash_backward_write_dq<T, D>(a, a.dq_accum, a.dqkv);
}

#define DISPATCH_HEAD_DIM(d, D, ...) \
    do {                             \
        if ((d) == 64) {             \
            const int D = 64;        \
            __VA_ARGS__;             \
        } else {                     \
            const int D = 128;       \
            __VA_ARGS__;             \
        }                            \
    } while (0)

extern "C" void attention_forward(const AttentionProblem *p, const AttentionDropout *dropout, const void *qkv,
                                  void *ctx, float *lse) {
    require_supported(p, "attention_forward");
    const void *tensors[] = {qkv, ctx, lse};
    require_aligned(tensors, 3, "attention_forward");
    const AttentionKernelChoice k = choose(ATTENTION_FORWARD, p->head_dim);
    const FwdArgs a = {flash_params(p, dropout), qkv, ctx, lse};
    gpu_phase(CAT_ATTN_FWD);  // --breakdown's category (common/gpu/gpu_phase.h)
    DISPATCH_DTYPE(p->dtype, T, DISPATCH_HEAD_DIM(p->head_dim, D, forward<T, D>(a, k)));
    gpu_phase_end();
}

// The workspace holds Dsum (one float per query), the swapAB and warp-specialised backwards'
// tile statistics (lse log2(e) and Dsum per query again, each head's row padded to a multiple
// of 128 or of 80 queries, whichever is longer: flash_tile_stats_row; there whichever kernel runs, so that the size does not
// depend on the switches) and then dQ's accumulator, which the vector atomics, the TMA
// reductions and the bulk copies need 16-byte aligned: Dsum's part is rounded up to a multiple
// of 64 floats (the statistics' part is a multiple of 16: each row is a multiple of 16 floats). Deterministic: one accumulator per slice of keys, as
// many as the kernel with the fewest keys per slice (64) writes, whichever kernel runs.
static size_t dsum_floats(const AttentionProblem *p) { return ((size_t)p->seq * p->batch * p->heads + 63) / 64 * 64; }

static size_t tile_stats_floats(const AttentionProblem *p) {
    return flash_tile_stats_floats(p->seq, p->batch, p->heads);
}

static const int DQ_SLICE_KEYS = 64;  // the fewest keys per dQ slice of any backward kernel

static size_t dq_slices(const AttentionProblem *p) {
    return p->deterministic ? (size_t)(p->seq + DQ_SLICE_KEYS - 1) / DQ_SLICE_KEYS : 1;
}

extern "C" size_t attention_backward_workspace_bytes(const AttentionProblem *p) {
    return (dsum_floats(p) + tile_stats_floats(p) + dq_slices(p) * p->seq * p->batch * p->heads * p->head_dim) *
           sizeof(float);
}

extern "C" void attention_backward(const AttentionProblem *p, const AttentionDropout *dropout, const void *qkv,
                                   const void *ctx, const void *dctx, const float *lse, void *dqkv,
                                   void *workspace) {
    require_supported(p, "attention_backward");
    const void *tensors[] = {qkv, ctx, dctx, lse, dqkv, workspace};
    require_aligned(tensors, 6, "attention_backward");
    const AttentionKernelChoice k = choose(ATTENTION_BACKWARD, p->head_dim);
    // More slices than the workspace holds:
    if (p->deterministic && dq_slice_keys(k, p->head_dim, 1) < DQ_SLICE_KEYS)
        DIE("attention_backward: %s has fewer than %d keys per dQ slice", k.kernel, DQ_SLICE_KEYS);
    float *dsum = (float *)workspace, *stats_area = dsum + dsum_floats(p);
    const bool needs_tile_stats =
        backward_runs_ws(k, p->head_dim, p->deterministic) || backward_runs_swapab(k, p->head_dim);
    float *tile_stats = needs_tile_stats ? stats_area : nullptr;
    float *dq_accum = stats_area + tile_stats_floats(p);
    const BwdArgs a = {flash_params(p, dropout), qkv, dctx, lse, dsum, dq_accum, dqkv, p->deterministic, tile_stats};
    gpu_phase(CAT_ATTN_BWD);
    DISPATCH_DTYPE(p->dtype, T, DISPATCH_HEAD_DIM(p->head_dim, D, backward<T, D>(a, ctx, dsum, tile_stats, k)));
    gpu_phase_end();
}
