// NCCL_CHECK(call): on failure print file, line, the call and NCCL's message; exit 1.
#ifndef COMMON_GPU_NCCL_CHECK_H
#define COMMON_GPU_NCCL_CHECK_H

#include <nccl.h>

#include "common/core/errors.h"

#define NCCL_CHECK(call)                                                                   \
    do {                                                                                   \
        ncclResult_t r_ = (call);                                                          \
        if (r_ != ncclSuccess)                                                             \
            die_at(__FILE__, __LINE__, "NCCL error: %s (%s), in %s", ncclGetErrorString(r_), \
                   ncclGetLastError(NULL), #call);                                         \
    } while (0)

#endif  // COMMON_GPU_NCCL_CHECK_H
