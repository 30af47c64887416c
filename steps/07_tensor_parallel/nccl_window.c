// NCCL's registered buffers and CTA policies, tried feature by feature (see nccl_window.h).
#ifndef _GNU_SOURCE
#define _GNU_SOURCE  // RTLD_DEFAULT (the build sets it too: .bazelrc)
#endif
#include "steps/07_tensor_parallel/nccl_window.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "common/core/errors.h"
#include "common/gpu/cuda_check.h"
#include "common/gpu/gpu.h"
#include "common/gpu/nccl_check.h"

// What the headers offer. NCCL_VERSION(2, 27, 0) is 22700.
#define TP_NCCL_HAS_MEM_ALLOC (NCCL_VERSION_CODE >= NCCL_VERSION(2, 19, 0))
#define TP_NCCL_HAS_WINDOWS (NCCL_VERSION_CODE >= NCCL_VERSION(2, 27, 0))
#define TP_NCCL_HAS_CTA_POLICY (NCCL_VERSION_CODE >= NCCL_VERSION(2, 27, 0))
#ifdef NCCL_CTA_POLICY_ZERO
#define TP_NCCL_HAS_CTA_POLICY_ZERO 1
#else
#define TP_NCCL_HAS_CTA_POLICY_ZERO 0
#endif

const char *tp_cta_policy_name(TpCtaPolicy p) {
    switch (p) {
        case TP_CTA_POLICY_DEFAULT: return "default";
        case TP_CTA_POLICY_EFFICIENCY: return "efficiency";
        case TP_CTA_POLICY_ZERO: return "zero";
        default: return "unset";
    }
}

// NCCL's version code as "major.minor.patch" (the code's layout changed at 2.9).
static const char *version_words(int code, char *buf, size_t size) {
    if (code >= 10000) snprintf(buf, size, "%d.%d.%d", code / 10000, code / 100 % 100, code % 100);
    else snprintf(buf, size, "%d.%d.%d", code / 1000, code / 100 % 10, code % 100);
    return buf;
}

const char *nccl_build_version(char *buf, size_t size) { return version_words(NCCL_VERSION_CODE, buf, size); }

static int runtime_code(void) {
    int code = 0;
    if (ncclGetVersion(&code) != ncclSuccess) return 0;
    return code;
}

const char *nccl_runtime_version(char *buf, size_t size) { return version_words(runtime_code(), buf, size); }

// NULL if both the headers and the loaded library are at least `need` (a version code).
static const char *needs_version(const char *feature, int need, int built_with_it, char *why, size_t size) {
    char have[32], want[32];
    version_words(need, want, sizeof want);
    if (!built_with_it) {
        snprintf(why, size, "%s needs NCCL %s; built with %s's headers", feature, want,
                 nccl_build_version(have, sizeof have));
        return why;
    }
    if (runtime_code() < need) {
        snprintf(why, size, "%s needs NCCL %s; the library loaded is %s", feature, want,
                 nccl_runtime_version(have, sizeof have));
        return why;
    }
    return NULL;
}

// ---- The window calls, found in the loaded library -----------------------------------------
// Looked up by name, not linked: a binary built with 2.27+ headers then still loads against an
// older libnccl (the link uses -z now, which would refuse a missing symbol at start-up).
#if TP_NCCL_HAS_WINDOWS
typedef ncclResult_t (*WindowRegisterFn)(ncclComm_t, void *, size_t, ncclWindow_t *, int);
typedef ncclResult_t (*WindowDeregisterFn)(ncclComm_t, ncclWindow_t);
static WindowRegisterFn window_register_fn(void) {
    static WindowRegisterFn fn;
    if (!fn) *(void **)&fn = dlsym(RTLD_DEFAULT, "ncclCommWindowRegister");
    return fn;
}
static WindowDeregisterFn window_deregister_fn(void) {
    static WindowDeregisterFn fn;
    if (!fn) *(void **)&fn = dlsym(RTLD_DEFAULT, "ncclCommWindowDeregister");
    return fn;
}
#endif

const char *nccl_windows_unsupported(char *why, size_t size) {
    if (needs_version("a symmetric window (ncclCommWindowRegister)", NCCL_VERSION(2, 27, 0), TP_NCCL_HAS_WINDOWS, why,
                      size))
        return why;
#if TP_NCCL_HAS_WINDOWS
    if (!window_register_fn() || !window_deregister_fn()) {
        snprintf(why, size, "the NCCL library loaded has no ncclCommWindowRegister / ncclCommWindowDeregister");
        return why;
    }
#endif
    return NULL;
}

const char *nccl_register_unsupported(char *why, size_t size) {
    return needs_version("ncclMemAlloc and ncclCommRegister", NCCL_VERSION(2, 19, 0), TP_NCCL_HAS_MEM_ALLOC, why, size);
}

const char *nccl_cta_policy_unsupported(TpCtaPolicy p, char *why, size_t size) {
    if (p == TP_CTA_POLICY_UNSET) return NULL;
    if (p == TP_CTA_POLICY_ZERO)
        return needs_version("CTA policy zero (NCCL_CTA_POLICY_ZERO)", NCCL_VERSION(2, 28, 0),
                             TP_NCCL_HAS_CTA_POLICY_ZERO, why, size);
    return needs_version("a CTA policy (ncclConfig_t.CTAPolicy)", NCCL_VERSION(2, 27, 0), TP_NCCL_HAS_CTA_POLICY, why,
                         size);
}

// "call: NCCL's message (its last error)".
static int nccl_failed(const char *call, ncclResult_t r, char *why, size_t size) {
    snprintf(why, size, "%s: %s (%s)", call, ncclGetErrorString(r), ncclGetLastError(NULL));
    return 1;
}

// ---- Communicators ---------------------------------------------------------------------------
int tp_comm_split_config(TpComm *c, TpCtaPolicy policy, int ctas, TpComm *out, char *why, size_t size) {
    *out = *c;
    out->comm = NULL;
    if (nccl_cta_policy_unsupported(policy, why, size)) return 1;
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 1;
    if (ctas > 0) config.minCTAs = ctas, config.maxCTAs = ctas;
#if TP_NCCL_HAS_CTA_POLICY
    if (policy != TP_CTA_POLICY_UNSET) config.CTAPolicy = (int)policy;
#endif
    tp_watchdog_arm(c, "ncclCommSplit (a communicator with a CTA policy)");
    ncclResult_t r = ncclCommSplit(c->comm, 0, c->rank, &out->comm, &config);
    tp_watchdog_disarm();
    if (r != ncclSuccess) {
        out->comm = NULL;
        char call[80];
        snprintf(call, sizeof call, "ncclCommSplit with CTA policy %s", tp_cta_policy_name(policy));
        return nccl_failed(call, r, why, size);
    }
    return 0;
}

// One int reduced over the ranks with `op` (ncclMin, ncclMax), every rank getting the result;
// `what` (a static string) names the wait for the watchdog.
static int32_t reduce_int_over_ranks(TpComm *c, int32_t value, ncclRedOp_t op, const char *what) {
    int32_t *dev = dev_alloc(sizeof *dev);
    CUDA_CHECK(cudaMemcpy(dev, &value, sizeof value, cudaMemcpyHostToDevice));
    tp_watchdog_arm(c, what);
    NCCL_CHECK(ncclAllReduce(dev, dev, 1, ncclInt32, op, c->comm, 0));
    tp_watchdog_disarm();
    tp_sync(c, 0, what);
    CUDA_CHECK(cudaMemcpy(&value, dev, sizeof value, cudaMemcpyDeviceToHost));
    dev_free(dev);
    return value;
}

int tp_all_ranks_ok(TpComm *c, int ok) {
    if (c->world == 1) return ok;
    return reduce_int_over_ranks(c, ok ? 1 : 0, ncclMin, "agreeing on an NCCL feature (a min-all-reduce)") == 1;
}

int tp_max_over_ranks(TpComm *c, int value) {
    if (c->world == 1) return value;
    return reduce_int_over_ranks(c, value, ncclMax, "agreeing on a count (a max-all-reduce)");
}

// ---- Buffers ---------------------------------------------------------------------------------
int nccl_buffer_alloc(NcclBuffer *b, size_t bytes, char *why, size_t size) {
    memset(b, 0, sizeof *b);
    if (nccl_register_unsupported(why, size)) return 1;
#if TP_NCCL_HAS_MEM_ALLOC
    ncclResult_t r = ncclMemAlloc(&b->ptr, bytes);
    if (r != ncclSuccess) {
        b->ptr = NULL;
        return nccl_failed("ncclMemAlloc", r, why, size);
    }
    b->bytes = bytes;
    CUDA_CHECK(cudaMemset(b->ptr, 0, bytes));
    CUDA_CHECK(cudaDeviceSynchronize());
#else
    (void)bytes;
#endif
    return 0;
}

// Takes the next registration slot of b, or says there is none.
static int next_slot(NcclBuffer *b, char *why, size_t size) {
    if (!b->ptr) {
        snprintf(why, size, "no buffer to register (its ncclMemAlloc failed)");
        return -1;
    }
    if (b->regs == NCCL_BUFFER_MAX_COMMS) {
        snprintf(why, size, "a buffer registered on more than %d communicators", NCCL_BUFFER_MAX_COMMS);
        return -1;
    }
    return b->regs;
}

#if TP_NCCL_HAS_MEM_ALLOC  // (windows need 2.27, so both callers compile only from 2.19 on)
// Records a registration of b on c (handle: the window or ncclCommRegister's handle) in the
// slot next_slot gave, for nccl_buffer_deregister to undo.
static void remember_registration(NcclBuffer *b, int slot, TpComm *c, void *handle, int window) {
    b->reg[slot].comm = c->comm, b->reg[slot].handle = handle, b->reg[slot].window = window, b->reg[slot].owner = c;
    b->regs++;
}
#endif

int nccl_buffer_register_window(NcclBuffer *b, TpComm *c, char *why, size_t size) {
    if (nccl_windows_unsupported(why, size)) return 1;
    const int slot = next_slot(b, why, size);
    if (slot < 0) return 1;
#if TP_NCCL_HAS_WINDOWS
    ncclWindow_t win = NULL;
    tp_watchdog_arm(c, "ncclCommWindowRegister (collective: every rank registers its buffer)");
    ncclResult_t r = window_register_fn()(c->comm, b->ptr, b->bytes, &win, NCCL_WIN_COLL_SYMMETRIC);
    tp_watchdog_disarm();
    if (r != ncclSuccess) return nccl_failed("ncclCommWindowRegister (NCCL_WIN_COLL_SYMMETRIC)", r, why, size);
    remember_registration(b, slot, c, win, 1);
#else
    (void)c;
#endif
    return 0;
}

int nccl_buffer_register(NcclBuffer *b, TpComm *c, char *why, size_t size) {
    if (nccl_register_unsupported(why, size)) return 1;
    const int slot = next_slot(b, why, size);
    if (slot < 0) return 1;
#if TP_NCCL_HAS_MEM_ALLOC
    void *handle = NULL;
    tp_watchdog_arm(c, "ncclCommRegister");
    ncclResult_t r = ncclCommRegister(c->comm, b->ptr, b->bytes, &handle);
    tp_watchdog_disarm();
    if (r != ncclSuccess) return nccl_failed("ncclCommRegister", r, why, size);
    remember_registration(b, slot, c, handle, 0);
#else
    (void)c;
#endif
    return 0;
}

void nccl_buffer_adopt(NcclBuffer *b, void *ptr, size_t bytes) {
    memset(b, 0, sizeof *b);
    b->ptr = ptr, b->bytes = bytes;
}

void nccl_buffer_deregister(NcclBuffer *b) {
    if (!b->ptr) return;
    // Nothing may still read or write the buffer when it leaves NCCL's hands.
    CUDA_CHECK(cudaDeviceSynchronize());
#if TP_NCCL_HAS_MEM_ALLOC
    for (int i = b->regs - 1; i >= 0; i--) {
        tp_watchdog_arm(b->reg[i].owner, "deregistering a buffer (ncclCommWindowDeregister / ncclCommDeregister)");
#if TP_NCCL_HAS_WINDOWS
        if (b->reg[i].window) NCCL_CHECK(window_deregister_fn()(b->reg[i].comm, (ncclWindow_t)b->reg[i].handle));
        else NCCL_CHECK(ncclCommDeregister(b->reg[i].comm, b->reg[i].handle));
#else
        NCCL_CHECK(ncclCommDeregister(b->reg[i].comm, b->reg[i].handle));
#endif
        tp_watchdog_disarm();
    }
#endif
    memset(b, 0, sizeof *b);
}

void nccl_buffer_free(NcclBuffer *b) {
    void *ptr = b->ptr;
    if (!ptr) return;
    nccl_buffer_deregister(b);
#if TP_NCCL_HAS_MEM_ALLOC
    NCCL_CHECK(ncclMemFree(ptr));
#endif
}

// ---- dev_alloc's allocator for NCCL's memory ---------------------------------------------------
static void *nccl_mem_alloc(size_t bytes, char *why, size_t size) {
    if (nccl_register_unsupported(why, size)) return NULL;
    void *ptr = NULL;
#if TP_NCCL_HAS_MEM_ALLOC
    ncclResult_t r = ncclMemAlloc(&ptr, bytes);
    if (r != ncclSuccess) {
        nccl_failed("ncclMemAlloc", r, why, size);
        return NULL;
    }
#else
    (void)bytes;
#endif
    return ptr;
}

static void nccl_mem_free(void *ptr) {
#if TP_NCCL_HAS_MEM_ALLOC
    NCCL_CHECK(ncclMemFree(ptr));
#else
    (void)ptr;
#endif
}

const DevAllocator NCCL_MEM_ALLOCATOR = {"ncclMemAlloc", nccl_mem_alloc, nccl_mem_free};
