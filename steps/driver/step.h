// What a step is, and the driver every step's main() hands itself to.
//
// A step fills in a StepOps: how to build its layer on the GPU from host parameters, run one
// training step (forward + backward) on device inputs, read its results back, and free it.
// Everything else - flags, random or loaded weights, the timing loop (the "speedometer"),
// --check against the CPU reference, --save, JSON - is the same for every step and lives in
// step_main.c. A step's main.c is then just:
//
//     int main(int argc, char **argv) { return step_main(argc, argv, &STEP_01_NAIVE); }
#ifndef STEPS_DRIVER_STEP_H
#define STEPS_DRIVER_STEP_H

#include <stdint.h>
#include <stdio.h>

#include "common/core/breakdown.h"
#include "common/core/layer.h"
#include "reference/reference.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct StepOps {
    const char *id;         // "01_naive"
    const char *title;      // "naive GPU port"
    const char *whats_new;  // one line for the comparison table
    // NULL if the step can run this configuration, else why not (e.g. head_dim 96).
    const char *(*unsupported)(const LayerConfig *cfg);
    // Upload `params` (already rounded to cfg->dtype) and allocate everything the step needs.
    void *(*create)(const LayerConfig *cfg, const LayerParams *params);
    // One training step: forward from d_x, backward from d_dy (device, cfg->dtype,
    // [seq, batch, hidden]). `step` selects the dropout masks: dropout_offset(step, site).
    void (*train_step)(void *state, const void *d_x, const void *d_dy, uint64_t step);
    // Copy out, dx and every parameter gradient of the last train_step to host floats.
    void (*read_results)(void *state, LayerResults *res);
    void (*destroy)(void *state);
    // Optional: step-specific flags, read by options_parse after the shared ones. Called
    // with value NULL to ask whether `flag` is a switch of the step (then it is applied, and
    // 1 returned), and with the value of a "--flag value" or "--flag=value" pair; returns 1
    // if the flag was taken. Bad values are refused by the step itself (common/core/flags.h).
    int (*parse_flag)(const char *flag, const char *value);
    // Lines appended to --help, or NULL. Each flag of the step should appear here as
    // "--name" at the start of its line: that is how the parser tells a step's flag given
    // last without its value ("--margin needs a value") from an unknown flag.
    const char *flags_help;
    // Optional: tolerances differ from the default (FP8). NULL: check_tolerance(dtype).
    double (*tolerance)(const LayerConfig *cfg, int which);
    // Optional: the CPU reference of a step that computes another layer (step 06's parallel
    // layer). NULL: ref_layer_train_step, the serial layer.
    void (*reference)(const LayerConfig *cfg, const LayerParams *params, const LayerInputs *in, uint64_t step,
                      LayerResults *res);
    // Optional, with `reference`: the same reference with the rounding of `rounding` (its
    // store hook: every stored activation and gradient rounded to the GPU's dtype), which
    // --check runs to measure the dtype's rounding noise on the input at hand (see
    // step_check), and with ref_grad_magnitudes() for the magnitude run (sums that cancel).
    // NULL with a `reference`: no noise or magnitude run, the fixed tolerance alone.
    void (*reference_rounded)(const LayerConfig *cfg, const LayerParams *params, const LayerInputs *in,
                              uint64_t step, const RefQuantizer *rounding, LayerResults *res);
    // Optional, for training loops whose output gradient depends on the output (the FP8
    // training demo, steps/05_fp8/train_demo.c): train_step's two halves, the output of the
    // last forward (device, cfg->dtype), and new parameter values for the next step.
    void (*forward)(void *state, const void *d_x, uint64_t step);
    void (*backward)(void *state, const void *d_dy, uint64_t step);
    const void *(*output)(const void *state);
    void (*load_params)(void *state, const LayerParams *params);
    // Which layer the step computes and whether its GEMMs are FP8: the work behind each
    // category's floor in --breakdown (common/core/breakdown.h). Zero: the serial layer in 16 bits.
    LayerVariant variant;
    // What the step needs of the GPU beyond what every step needs (compute capability 8.0,
    // which gpu_require checks): GPU_ARCH_MIN_FP8 (common/core/gpu_arch.h) for the FP8 steps.
    // 0: nothing more. The driver refuses an older GPU before any work (step_gpu_refusal).
    int min_cc;
    // Optional: what the step's own flags need of the GPU beyond min_cc (step 05's
    // --fp8-attention: wgmma, compute capability 9.0): NULL where this GPU will do, else the
    // sentence saying why not. step_gpu_refusal asks it after min_cc, so the driver refuses
    // such a GPU before any work too. NULL: nothing more.
    const char *(*flag_gpu_refusal)(void);
} StepOps;

// Command line shared by all steps (see `--help`, and options.c for the rules).
typedef struct {
    LayerConfig layer;
    int warmup, iters;
    int check;
    int breakdown;           // --breakdown: one more step, timed by category, beside its floors
    int check_config_given;  // --preset or a dimension was given explicitly
    int deterministic;       // --deterministic: becomes layer.deterministic once all flags are read
    int timing_given;        // --warmup or --iters was given
    const char *preset;      // the --preset given, or NULL
    const char *weights_path, *input_path, *save_path, *json_path;
} Options;

void options_defaults(Options *o);
// Parses argv into o (see --help): the preset first (--preset NAME wherever it is given, else
// "small" for --check without sizes, else the layer o holds), then every other flag in the
// order given, so a flag overrides the preset exactly where it is given. "--flag=value" is
// "--flag value". Refuses (message, exit 1) unknown flags, bad values (strict, in range),
// two presets, an invalid configuration (layer_config_problem), and --save/--json paths that
// cannot be written. --help prints the shared flags and the step's, then exits 0.
void options_parse(int argc, char **argv, Options *o, const StepOps *step);

// Results of one run, for the table and JSON.
typedef struct {
    double mean_ms, median_ms, min_ms;
    double tflops;           // layer_train_flops / mean time
    double peak_mib;         // peak device memory of the step (inputs included)
    double max_rel_error;    // worst ||gpu - ref|| / ||ref|| over out, dx, grads (-1: not checked)
    int check_passed;        // 1 passed, 0 failed, -1 not checked
    // With a breakdown: one more steady-state step, after the timed ones, recorded by category
    // (common/gpu/gpu_phase.h). breakdown_ms is that step's time, the sum of category_ms.
    int has_breakdown;
    double breakdown_ms;
    double category_ms[NUM_CATEGORIES];
    const char *breakdown_timer;  // "cupti" or "events": the timer that recorded it (gpu_phase_timer_key)
} StepReport;

// Times the step: `warmup` untimed steps, then `iters` timed ones (CUDA events); with
// `breakdown`, one more step recorded by category (has_breakdown, category_ms).
StepReport step_time(const StepOps *step, const LayerConfig *cfg, const LayerParams *params,
                     const LayerInputs *inputs, int warmup, int iters, int breakdown);

// The breakdown's floors for this step: its work per category (common/core/breakdown.h) at
// the measured rates. Returns the step's floor, the sum of floor_ms (NAN if a rate is missing).
double step_floors(const StepOps *step, const LayerConfig *cfg, const MeasuredRates *rates,
                   CategoryWork *work, double floor_ms[NUM_CATEGORIES]);
// Model FLOPs utilisation of a step that took step_ms: against the FP8 GEMM rate for a step
// whose GEMMs are FP8, else the 16-bit one (NAN where that rate was not measured).
double step_mfu(const StepOps *step, const LayerConfig *cfg, const MeasuredRates *rates, double step_ms);
// The table of one step's breakdown: per category its time, share, floor and time over floor,
// and where limit_floor_ms is not NULL its floor at the power limit (rates_at_power_limit).
void print_step_breakdown(FILE *f, const StepReport *r, const CategoryWork *work,
                          const double floor_ms[NUM_CATEGORIES], const double *limit_floor_ms);
// Runs one step on the GPU and the CPU reference from the same inputs and compares out, dx
// and every gradient; prints a table to `log` (may be NULL). Fills max_rel_error/check_passed.
void step_check(const StepOps *step, const LayerConfig *cfg, const LayerParams *params,
                const LayerInputs *inputs, FILE *log, StepReport *report);

// NULL if this GPU (gpu_effective_cc: GPU_SIMULATE_CC=8.0 makes a Hopper GPU act as an A100)
// can run the step, else the sentence saying why not, e.g. "step 05_fp8 (FP8 with delayed
// scaling) needs FP8 tensor cores (compute capability 8.9 or newer: ...); this NVIDIA
// A100-SXM4-80GB is compute capability 8.0"; then the step's flag_gpu_refusal. After gpu_require.
const char *step_gpu_refusal(const StepOps *step);

// Every environment switch the steps read (ATTENTION_*, EPILOGUE_*, GEMM_AUTOTUNE,
// GPU_SIMULATE_CC's spelling, GPU_PHASE_TIMER), checked now: a bad value stops with a message
// naming the variable, before any GPU is asked for, on any machine. Called by every step
// binary, step 07 and compare after their flags.
void require_valid_environment(void);

// The whole program of a step binary.
int step_main(int argc, char **argv, const StepOps *step);

#ifdef __cplusplus
}
#endif

#endif  // STEPS_DRIVER_STEP_H
