#include "common/core/gpu_arch.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t gpu_arch_max_smem_per_block(int cc) {
    if (cc < GPU_ARCH_MIN) return 0;
    if (cc == 80 || cc == 87) return 163 * 1024;
    if (cc >= 90 && cc < 120) return 227 * 1024;
    return 99 * 1024;  // 8.6, 8.8, 8.9, 12.x
}

int gpu_arch_has_wgmma(int cc) { return cc == GPU_ARCH_HOPPER; }

int gpu_arch_has_fp8(int cc) { return cc >= GPU_ARCH_MIN_FP8; }

const char *gpu_arch_feature(int min_cc) {
    switch (min_cc) {
    case GPU_ARCH_MIN: return "bf16 tensor cores";
    case GPU_ARCH_MIN_FP8: return "FP8 tensor cores";
    case GPU_ARCH_HOPPER: return "wgmma and TMA";
    default: return "compute capability";
    }
}

// A few GPUs that have it, so that a refusal also says what would do.
static const char *examples(int min_cc) {
    switch (min_cc) {
    case GPU_ARCH_MIN: return ": A100, RTX 30xx, L4, L40S, RTX 40xx, H100";
    case GPU_ARCH_MIN_FP8: return ": L4, L40S, RTX 40xx, H100";
    case GPU_ARCH_HOPPER: return ": H100, H200";
    default: return "";
    }
}

const char *gpu_arch_refusal(int cc, const char *gpu_name, const char *what, int min_cc, char *buf,
                             size_t n) {
    if (cc >= min_cc) return NULL;
    snprintf(buf, n, "%s needs %s (compute capability %d.%d or newer%s); this %s is compute capability %d.%d",
             what, gpu_arch_feature(min_cc), min_cc / 10, min_cc % 10, examples(min_cc),
             gpu_name ? gpu_name : "GPU", cc / 10, cc % 10);
    return buf;
}

// Reads the decimal digits at *s (at least one, at most 3) into *value and advances *s.
static int read_number(const char **s, int *value) {
    int digits = 0;
    *value = 0;
    while (isdigit((unsigned char)**s) && digits < 3) *value = 10 * *value + (*(*s)++ - '0'), digits++;
    return digits > 0 && !isdigit((unsigned char)**s);
}

int gpu_arch_parse_cc(const char *text) {
    if (!text) return -1;
    int major, minor;
    if (!read_number(&text, &major) || *text++ != '.' || !read_number(&text, &minor) || *text) return -1;
    if (major < 1 || major > 99 || minor > 9) return -1;
    return major * 10 + minor;
}

// One item of CUDA_ARCHS: "86" or "sm_86" (SASS), "compute_80" (PTX); "a" after the number:
// for that capability only. 0 if it is none of these.
typedef struct {
    GpuCodeKind kind;
    int cc, exact;
} ArchItem;

static ArchItem parse_arch_item(const char *item, size_t len) {
    ArchItem a = {GPU_CODE_SASS, 0, 0};
    char text[32];
    if (len == 0 || len >= sizeof text) return (ArchItem){GPU_CODE_NONE, 0, 0};
    memcpy(text, item, len);
    text[len] = 0;
    const char *s = text;
    if (!strncmp(s, "sm_", 3)) s += 3;
    else if (!strncmp(s, "compute_", 8)) s += 8, a.kind = GPU_CODE_PTX;
    int number;
    if (!read_number(&s, &number)) return (ArchItem){GPU_CODE_NONE, 0, 0};
    if (*s == 'a') s++, a.exact = 1;
    if (*s) return (ArchItem){GPU_CODE_NONE, 0, 0};
    a.cc = number;
    return a;
}

static int item_runs_on(ArchItem a, int cc) {
    if (a.kind == GPU_CODE_NONE) return 0;
    if (a.exact) return a.cc == cc;
    if (a.kind == GPU_CODE_SASS) return a.cc / 10 == cc / 10 && a.cc % 10 <= cc % 10;
    return a.cc <= cc;  // PTX: JIT-compiled for any capability from its own up
}

GpuCodeKind gpu_arch_code_for(const char *archs, int cc, char *buf, size_t n) {
    ArchItem best = {GPU_CODE_NONE, 0, 0};
    for (const char *s = archs ? archs : ""; *s;) {
        size_t len = strcspn(s, ",");
        ArchItem a = parse_arch_item(s, len);
        // SASS beats PTX; then the newer capability; then the "a" variant (all of 9.0's features).
        if (item_runs_on(a, cc) &&
            (best.kind == GPU_CODE_NONE || (a.kind == GPU_CODE_SASS && best.kind == GPU_CODE_PTX) ||
             (a.kind == best.kind && (a.cc > best.cc || (a.cc == best.cc && a.exact)))))
            best = a;
        s += len + (s[len] == ',');
    }
    if (best.kind == GPU_CODE_NONE) {
        if (n) buf[0] = 0;
        return GPU_CODE_NONE;
    }
    snprintf(buf, n, "%s_%d%s", best.kind == GPU_CODE_SASS ? "sm" : "compute", best.cc, best.exact ? "a" : "");
    return best.kind;
}
