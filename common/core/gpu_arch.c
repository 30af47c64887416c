#include "common/core/gpu_arch.h"

#include <stdio.h>
#include <stdlib.h>

size_t gpu_arch_max_smem_per_block(int cc) {
    if (cc < GPU_ARCH_MIN) return 0;
    if (cc == 80 || cc == 87) return 163 * 1024;
    if (cc >= 90 && cc < 120) return 227 * 1024;
    return 99 * 1024;  // 8.6, 8.9, 12.x
}

int gpu_arch_has_wgmma(int cc) { return cc == GPU_ARCH_HOPPER; }

int gpu_arch_has_fp8(int cc) { return cc >= GPU_ARCH_MIN_FP8; }

const char *gpu_arch_refusal(int cc, const char *gpu_name, const char *what, int min_cc, char *buf,
                             size_t n) {
    if (cc >= min_cc) return NULL;
    snprintf(buf, n, "%s needs a GPU of compute capability %d.%d or newer; this %s is %d.%d",
             what, min_cc / 10, min_cc % 10, gpu_name ? gpu_name : "GPU", cc / 10, cc % 10);
    return buf;
}

int gpu_arch_parse_cc(const char *text) {
    if (!text) return -1;
    char *end;
    long major = strtol(text, &end, 10);
    if (end == text || *end != '.' || major < 1 || major > 99) return -1;
    const char *m = end + 1;
    long minor = strtol(m, &end, 10);
    if (end == m || *end != 0 || minor < 0 || minor > 9) return -1;
    return (int)(major * 10 + minor);
}
