// The time breakdown as JSON, shared by the step driver (--breakdown --json) and compare.
//
// step_breakdown_json(): {"floor_ms", "floor_at_power_limit_ms", "time_over_floor_at_power_limit",
// "mfu", "time_over_floor", "recorded_step_ms", "timer", "categories": {"gemm_fprop": {"name",
// "ms", "floor_ms", "floor_at_power_limit_ms", "flops", "bytes"}, ...}} - ms is null without a
// recorded step, a floor null where its rate was not measured (the power-limit ones without
// --breakdown); timer is "cupti" or "events" (common/gpu/gpu_phase.h), null without a recorded step.
// rates_json(): the measured rates ({"gemm_tflops", ..., "copy_gbps", "at_power_limit":
// {"gemm_tflops", ...}}, null where not measured).
#ifndef STEPS_DRIVER_BREAKDOWN_REPORT_H
#define STEPS_DRIVER_BREAKDOWN_REPORT_H

#include <stdio.h>

#include <jansson.h>

#include "steps/driver/step.h"

#ifdef __cplusplus
extern "C" {
#endif

json_t *step_breakdown_json(const StepOps *step, const LayerConfig *cfg, const MeasuredRates *rates,
                            const StepReport *r);
json_t *rates_json(const MeasuredRates *r);
// "CUPTI activity records of every kernel (GPU_PHASE_TIMER=cupti)" for StepReport's
// breakdown_timer ("cupti" or "events"); "none" for NULL. For tables' titles.
const char *breakdown_timer_words(const char *timer_key);
// Writes `value` compactly to f and releases it.
void fprint_json(FILE *f, json_t *value);

#ifdef __cplusplus
}
#endif

#endif  // STEPS_DRIVER_BREAKDOWN_REPORT_H
