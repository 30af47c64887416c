// The GPU exercises' reference solutions under their second names (tools/exercises.bzl builds
// each solution again with its launchers renamed ex_X -> solution_X), so that a graded test can
// time the reference solution next to the learner's code. Signatures: exercises/gpu_exercises.h.
#ifndef TESTS_EXERCISES_EXERCISE_SOLUTIONS_H
#define TESTS_EXERCISES_EXERCISE_SOLUTIONS_H

#include "exercises/gpu_exercises.h"

#ifdef __cplusplus
extern "C" {
#endif

void solution_layernorm_forward(const fp16_t *x, const fp16_t *gamma, const fp16_t *beta, fp16_t *y, float *mean,
                                float *rstd, int rows, int cols, float eps);
void solution_bias_gelu(const fp16_t *x, const fp16_t *bias, fp16_t *pre, fp16_t *y, int rows, int cols);
void solution_attention_forward(const fp16_t *q, const fp16_t *k, const fp16_t *v, fp16_t *o, float *lse, int heads,
                                int seq, int head_dim, int causal);
void solution_fp8_cast(const fp16_t *x, uint8_t *out, int64_t n, const float *scale, float *amax, Fp8Format format);
int solution_linear_forward(const fp16_t *x, const fp16_t *weight, const fp16_t *bias, fp16_t *y, int tokens,
                            int in_features, int out_features);

#ifdef __cplusplus
}
#endif

#endif  // TESTS_EXERCISES_EXERCISE_SOLUTIONS_H
