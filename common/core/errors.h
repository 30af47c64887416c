// Error checks that say where a call failed and what the library said.
//
//   DIE("bad thing %d", x);               an internal error, with file and line
//   fail_user("--hidden must be > 0");    a user error (bad flag, bad file): no location
//
// The GPU checks (CUDA_CHECK, CUBLAS_CHECK, CHECK_LAUNCH) are in common/gpu/cuda_check.h,
// NCCL_CHECK in common/gpu/nccl_check.h.
//
// On failure DIE prints "file:line: <library>: <message>" and exits with status 1:
// a training step that has gone wrong cannot be recovered, and a clear message is
// what a learner needs.
#ifndef COMMON_CORE_ERRORS_H
#define COMMON_CORE_ERRORS_H

#include <stdio.h>
#include <stdlib.h>

#ifdef __cplusplus
extern "C" {
#endif

// Prints "file:line: message" to stderr and exits with status 1.
void die_at(const char *file, int line, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));
#define DIE(...) die_at(__FILE__, __LINE__, __VA_ARGS__)

// Prints "error: message" (no location: for user errors such as bad flags) and exits 1.
void fail_user(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

// Allocation that never returns NULL (exits with a message instead).
void *xmalloc(size_t bytes);
void *xcalloc(size_t count, size_t size);

#ifdef __cplusplus
}
#endif

#endif  // COMMON_CORE_ERRORS_H
