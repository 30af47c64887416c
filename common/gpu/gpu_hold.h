// Holding the default stream while the host queues a whole training step.
//
// The breakdown (gpu_phase.h) records a CUDA event at every category boundary: about twice as
// many commands as the step's launches. Queued one by one as the GPU runs them, a step of
// many small kernels becomes bound by the host's launch rate, and the recorded step comes out
// slower than the steps it describes (seen on an H200, 2026-11-29: step 05 at a small shape,
// 2.32 ms recorded against a 2.07 ms mean). So the driver closes the stream with a hold kernel
// that spins on a flag in mapped host memory, queues the whole step behind it, and then opens
// it: the GPU runs the recorded step back to back, as it runs a steady-state step whose
// launches are queued well ahead. The CUPTI timer (the default since) adds no commands, but
// it adds host time to every launch (CUPTI records each runtime and driver call), so the hold
// stays: both timers queue the recorded step behind it, and leave the hold itself out.
//
// The hold gives up by itself after timeout_ms (a launch queue that fills up before the step
// is queued would otherwise never let the host reach gpu_hold_open): gpu_hold_open returns 1
// when that happened, and the recorded step may then include launch gaps.
#ifndef COMMON_GPU_GPU_HOLD_H
#define COMMON_GPU_GPU_HOLD_H

#ifdef __cplusplus
extern "C" {
#endif

// Queues the hold kernel on the default stream (one thread; the flag is cleared first).
void gpu_hold_close(double timeout_ms);
// Releases it; returns 1 if the hold had already given up (timed out), else 0.
int gpu_hold_open(void);

#ifdef __cplusplus
}
#endif

#endif  // COMMON_GPU_GPU_HOLD_H
