// NCCL's registered buffers and CTA policies, each feature tried and, where this NCCL lacks
// it, reported and done without (never a crash): what the sweep measures (tp_sweep.h) and
// what --nccl-cta-policy and --nccl-register turn on in the layer (layer_comm.h).
//
//   symmetric window  a buffer from ncclMemAlloc (CUDA VMM memory), registered on a
//                     communicator with ncclCommWindowRegister(..., NCCL_WIN_COLL_SYMMETRIC).
//                     Every rank registers a buffer of the same size, in the same order (the
//                     call is collective); a collective whose buffers all lie in windows at
//                     the same offset on every rank may then run NCCL's symmetric kernels,
//                     which load and store the peers' memory directly over NVLink instead of
//                     staging through NCCL's own buffers. NCCL >= 2.27, at build and run time.
//   user registration ncclCommRegister: the same ncclMemAlloc buffer made known to one
//                     communicator (zero-copy for the transports that support it), without
//                     the symmetric promise. NCCL >= 2.19.
//   CTA policy        ncclConfig_t.CTAPolicy of a communicator: DEFAULT (NCCL's speed-first
//                     choice), EFFICIENCY (as few CTAs as give decent speed; >= 2.27), ZERO
//                     (no CTA where NCCL can: copy-engine collectives on symmetric windows;
//                     >= 2.28). Set at ncclCommSplit.
//
// NVLink multicast (NVLS) stays off: nothing here creates a multicast object, and
// keep_nvls_off (tp_comm.h) sets NCCL_NVLS_ENABLE=0 before any communicator exists.
//
// Build and run time: each feature is compiled only where the headers have it
// (NCCL_VERSION_CODE), and asked of the library that is actually loaded: the window calls are
// looked up by name (dlsym), so the same binary runs against a libnccl without them and says
// which feature it lacks. ncclMemAlloc, ncclCommRegister and their frees are linked directly:
// the binary needs NCCL 2.19 or newer to start at all. Errors: the functions returning int give 0 on success and fill
// `why` ("ncclCommWindowRegister: invalid usage (...)") otherwise; the caller goes on without.
// Every rank is expected to get the same answer (one library, one machine); a rank that did
// not would leave its peers waiting in a collective until the watchdog's deadline (tp_comm.h)
// ends them with a message.
#ifndef STEPS_07_TENSOR_PARALLEL_NCCL_WINDOW_H
#define STEPS_07_TENSOR_PARALLEL_NCCL_WINDOW_H

#include <stddef.h>

#include "common/gpu/gpu.h"
#include "steps/07_tensor_parallel/tp_comm.h"

// The CTA policies by NCCL's values (NCCL_CTA_POLICY_*), or UNSET: the config field left to
// NCCL (the communicator as before this feature).
typedef enum {
    TP_CTA_POLICY_UNSET = -1,
    TP_CTA_POLICY_DEFAULT = 0,
    TP_CTA_POLICY_EFFICIENCY = 1,
    TP_CTA_POLICY_ZERO = 2,
} TpCtaPolicy;

// "default", "efficiency", "zero" (the flag's words); "NCCL's" for UNSET.
const char *tp_cta_policy_name(TpCtaPolicy p);

// NCCL's version: the headers this was built with, and the library loaded now, as "2.28.3".
const char *nccl_build_version(char *buf, size_t size);
const char *nccl_runtime_version(char *buf, size_t size);

// NULL when the feature can be tried with this build and this library; else why not.
const char *nccl_windows_unsupported(char *why, size_t size);
const char *nccl_register_unsupported(char *why, size_t size);
const char *nccl_cta_policy_unsupported(TpCtaPolicy p, char *why, size_t size);

// A second blocking communicator over the same ranks (ncclCommSplit) with the given CTA policy
// (UNSET: none) and CTA count (ctas > 0: minCTAs = maxCTAs = ctas; 0: NCCL's). Returns 0 and
// fills *out (destroy with tp_comm_destroy), or 1 with `why` when NCCL refuses: the caller
// goes on without. Collective: every rank calls it with the same arguments.
int tp_comm_split_config(TpComm *c, TpCtaPolicy policy, int ctas, TpComm *out, char *why, size_t size);

// 1 on every rank when `ok` is 1 on every rank, else 0 on every rank (a min-all-reduce on c):
// a feature set up on one rank and refused on another is then used by none, so that the
// ranks never disagree on which collective they call. Collective.
int tp_all_ranks_ok(TpComm *c, int ok);
// The largest `value` over the ranks, on every rank (a max-all-reduce on c): for a count of
// collectives each rank derived from its own timings (tp_sweep.c's calls beside a GEMM), so
// that every rank calls the same number of them. Collective.
int tp_max_over_ranks(TpComm *c, int value);

#define NCCL_BUFFER_MAX_COMMS 4

// Device memory for NCCL: ncclMemAlloc'd, registered on up to NCCL_BUFFER_MAX_COMMS
// communicators (as a symmetric window, or with ncclCommRegister).
typedef struct {
    void *ptr;
    size_t bytes;
    int regs;
    struct {
        ncclComm_t comm;
        void *handle;  // an ncclWindow_t or ncclCommRegister's handle
        int window;    // 1: a window (ncclCommWindowDeregister), 0: ncclCommDeregister
        TpComm *owner; // for the watchdog around the deregistration (a call of this rank alone)
    } reg[NCCL_BUFFER_MAX_COMMS];
} NcclBuffer;

// ncclMemAlloc(bytes), zeroed. 0 or 1 with `why` (the buffer is then empty).
int nccl_buffer_alloc(NcclBuffer *b, size_t bytes, char *why, size_t size);
// Registers the whole buffer on c as a symmetric window (collective: every rank, same size,
// same order). 0 or 1 with `why`.
int nccl_buffer_register_window(NcclBuffer *b, TpComm *c, char *why, size_t size);
// ncclCommRegister of the whole buffer on c. 0 or 1 with `why`.
int nccl_buffer_register(NcclBuffer *b, TpComm *c, char *why, size_t size);
// Deregisters from every communicator (in reverse registration order, the same on every rank),
// then ncclMemFree. Call before those communicators are destroyed. An empty buffer: nothing.
void nccl_buffer_free(NcclBuffer *b);

// A buffer that dev_alloc took from NCCL_MEM_ALLOCATOR (below), made an NcclBuffer for
// registering: ptr, bytes as dev_alloc gave them (its owner frees it, with dev_free).
void nccl_buffer_adopt(NcclBuffer *b, void *ptr, size_t bytes);
// Deregisters from every communicator, as nccl_buffer_free, and forgets the buffer without
// freeing it: for adopted buffers, before their owner's dev_free.
void nccl_buffer_deregister(NcclBuffer *b);

// dev_alloc's allocator for NCCL's memory (gpu.h's DevAllocator): ncclMemAlloc / ncclMemFree,
// for step 07's --nccl-register. Install it with dev_set_allocator once
// nccl_register_unsupported has said NULL; where ncclMemAlloc is missing its alloc fails and
// says why.
extern const DevAllocator NCCL_MEM_ALLOCATOR;

#endif  // STEPS_07_TENSOR_PARALLEL_NCCL_WINDOW_H
