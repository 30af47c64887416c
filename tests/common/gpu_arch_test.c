// What each GPU generation can run (common/core/gpu_arch.h), on the CPU, for every generation a
// workshop meets: V100 (7.0) and T4 (7.5) are refused in one sentence naming what they lack;
// A100 (8.0) and RTX 30xx (8.6) run everything but FP8, which they refuse naming the GPU and
// the minimum, 8.9; L4 / L40S / RTX 40xx (8.9) run FP8; H100 / H200 (9.0) also the wgmma
// kernels; newer GPUs run the build's PTX. And the build's default CUDA_ARCHS (.bazelrc) gives
// every one of them from 8.0 up code to run, and the portable build PTX for compute_80.
#include <stdio.h>
#include <string.h>

#include "common/core/gpu_arch.h"
#include "tests/test_util.h"

// Fails, showing the sentence, unless it contains every one of the NULL-terminated words.
static void assert_says(const char *sentence, const char *const *words) {
    assert_non_null(sentence);
    print_message("  \"%s\"\n", sentence);
    for (; *words; words++)
        if (!strstr(sentence, *words)) fail_msg("expected \"%s\" in: %s", *words, sentence);
}

static void test_shared_memory_per_generation(void **state) {
    (void)state;
    assert_int_equal(gpu_arch_max_smem_per_block(70), 0);  // refused anyway
    assert_int_equal(gpu_arch_max_smem_per_block(75), 0);
    assert_int_equal(gpu_arch_max_smem_per_block(80), 163 * 1024);  // A100
    assert_int_equal(gpu_arch_max_smem_per_block(86), 99 * 1024);   // RTX 30xx
    assert_int_equal(gpu_arch_max_smem_per_block(87), 163 * 1024);  // Jetson Orin
    assert_int_equal(gpu_arch_max_smem_per_block(89), 99 * 1024);   // L4, L40S, RTX 40xx
    assert_int_equal(gpu_arch_max_smem_per_block(90), 227 * 1024);  // H100, H200
    assert_int_equal(gpu_arch_max_smem_per_block(100), 227 * 1024); // B200
    assert_int_equal(gpu_arch_max_smem_per_block(120), 99 * 1024);  // RTX 50xx
}

static void test_features_per_generation(void **state) {
    (void)state;
    const int cc[] = {70, 75, 80, 86, 87, 89, 90, 100, 120};
    const int fp8[] = {0, 0, 0, 0, 0, 1, 1, 1, 1};
    const int wgmma[] = {0, 0, 0, 0, 0, 0, 1, 0, 0};  // sm_90a code runs on 9.0 only
    for (size_t i = 0; i < sizeof cc / sizeof cc[0]; i++) {
        assert_int_equal(gpu_arch_has_fp8(cc[i]), fp8[i]);
        assert_int_equal(gpu_arch_has_wgmma(cc[i]), wgmma[i]);
    }
}

static void test_older_than_ampere_is_refused_in_one_sentence(void **state) {
    (void)state;
    char buf[512];
    const char *t4 = gpu_arch_refusal(75, "Tesla T4", "this program", GPU_ARCH_MIN, buf, sizeof buf);
    assert_says(t4, (const char *[]){"this program needs bf16 tensor cores", "compute capability 8.0 or newer",
                                     "this Tesla T4 is compute capability 7.5", NULL});
    assert_null(strchr(t4, '\n'));
    const char *v100 = gpu_arch_refusal(70, "Tesla V100-SXM2-16GB", "this program", GPU_ARCH_MIN, buf, sizeof buf);
    assert_says(v100, (const char *[]){"bf16 tensor cores", "8.0", "Tesla V100-SXM2-16GB is compute capability 7.0",
                                       NULL});
    for (int cc = 80; cc <= 120; cc++) assert_null(gpu_arch_refusal(cc, "GPU", "this program", GPU_ARCH_MIN, buf, sizeof buf));
}

static void test_fp8_needs_8_9(void **state) {
    (void)state;
    char buf[512];
    const char *what = "step 05_fp8 (FP8 with delayed scaling)";
    assert_says(gpu_arch_refusal(80, "NVIDIA A100-SXM4-80GB", what, GPU_ARCH_MIN_FP8, buf, sizeof buf),
                (const char *[]){"step 05_fp8 (FP8 with delayed scaling) needs FP8 tensor cores",
                                 "compute capability 8.9 or newer", "NVIDIA A100-SXM4-80GB is compute capability 8.0",
                                 NULL});
    assert_says(gpu_arch_refusal(86, "NVIDIA GeForce RTX 3090", what, GPU_ARCH_MIN_FP8, buf, sizeof buf),
                (const char *[]){"8.9", "NVIDIA GeForce RTX 3090 is compute capability 8.6", NULL});
    assert_null(gpu_arch_refusal(89, "NVIDIA L4", what, GPU_ARCH_MIN_FP8, buf, sizeof buf));
    assert_null(gpu_arch_refusal(90, "NVIDIA H200", what, GPU_ARCH_MIN_FP8, buf, sizeof buf));
    assert_null(gpu_arch_refusal(120, "NVIDIA GeForce RTX 5090", what, GPU_ARCH_MIN_FP8, buf, sizeof buf));
    // A short buffer still ends in a terminated string.
    char tiny[16];
    assert_non_null(gpu_arch_refusal(80, "NVIDIA A100", what, GPU_ARCH_MIN_FP8, tiny, sizeof tiny));
    assert_int_equal(strlen(tiny), sizeof tiny - 1);
}

// GPU_SIMULATE_CC's values.
static void test_parse_compute_capability(void **state) {
    (void)state;
    assert_int_equal(gpu_arch_parse_cc("8.0"), 80);
    assert_int_equal(gpu_arch_parse_cc("8.6"), 86);
    assert_int_equal(gpu_arch_parse_cc("8.9"), 89);
    assert_int_equal(gpu_arch_parse_cc("7.5"), 75);
    assert_int_equal(gpu_arch_parse_cc("9.0"), 90);
    assert_int_equal(gpu_arch_parse_cc("12.0"), 120);
    const char *bad[] = {"", "8", "80", "8.", ".8", "8.10", "8.0 ", " 8.0", "+8.0", "8.-1", "0.5", "8,0", "sm_80", "a.b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (gpu_arch_parse_cc(bad[i]) != -1) fail_msg("\"%s\" parsed as %d", bad[i], gpu_arch_parse_cc(bad[i]));
    }
    assert_int_equal(gpu_arch_parse_cc(NULL), -1);
}

// Which code of a build each GPU runs (the driver's choice: its own SASS, else PTX it JIT-compiles).
static void expect_code(const char *archs, int cc, GpuCodeKind kind, const char *code) {
    char buf[32];
    GpuCodeKind got = gpu_arch_code_for(archs, cc, buf, sizeof buf);
    if (got != kind || strcmp(buf, code))
        fail_msg("CUDA_ARCHS=%s on %d.%d: expected %d \"%s\", got %d \"%s\"", archs, cc / 10, cc % 10, kind, code, got,
                 buf);
}

static void test_code_each_gpu_runs(void **state) {
    (void)state;
    const char *all = "80,86,89,90a,compute_90";
    expect_code(all, 75, GPU_CODE_NONE, "");
    expect_code(all, 80, GPU_CODE_SASS, "sm_80");
    expect_code(all, 86, GPU_CODE_SASS, "sm_86");
    expect_code(all, 87, GPU_CODE_SASS, "sm_86");  // SASS runs on a newer minor version
    expect_code(all, 89, GPU_CODE_SASS, "sm_89");
    expect_code(all, 90, GPU_CODE_SASS, "sm_90a");
    expect_code(all, 100, GPU_CODE_PTX, "compute_90");
    expect_code(all, 120, GPU_CODE_PTX, "compute_90");
    expect_code("compute_80", 90, GPU_CODE_PTX, "compute_80");
    expect_code("90a", 80, GPU_CODE_NONE, "");  // the old default: Hopper only
    expect_code("90a", 100, GPU_CODE_NONE, "");  // "a" code: on 9.0 only
    expect_code("compute_90a", 100, GPU_CODE_NONE, "");
    expect_code("sm_80", 90, GPU_CODE_NONE, "");  // SASS never crosses a major version
    expect_code("80,compute_80", 90, GPU_CODE_PTX, "compute_80");
    expect_code("86", 80, GPU_CODE_NONE, "");
    expect_code("80,bogus", 80, GPU_CODE_SASS, "sm_80");
}

// The value of `build<config> --define=CUDA_ARCHS=` in .bazelrc (config "" for the default).
static int bazelrc_archs(const char *config, char *out, size_t n) {
    FILE *f = fopen(".bazelrc", "r");
    if (!f) return 0;
    char line[512], prefix[128];
    snprintf(prefix, sizeof prefix, "build%s%s --define=CUDA_ARCHS=", *config ? ":" : "", config);
    int found = 0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, prefix, strlen(prefix))) {
            snprintf(out, n, "%s", line + strlen(prefix));
            out[strcspn(out, " \n")] = 0;
            found = 1;
        }
    fclose(f);
    return found;
}

static void test_default_build_runs_on_every_generation(void **state) {
    (void)state;
    char archs[256], code[32];
    assert_true(bazelrc_archs("", archs, sizeof archs));
    print_message("  default CUDA_ARCHS=%s\n", archs);
    const int cc[] = {80, 86, 87, 89, 90, 100, 103, 110, 120, 121};
    for (size_t i = 0; i < sizeof cc / sizeof cc[0]; i++) {
        GpuCodeKind kind = gpu_arch_code_for(archs, cc[i], code, sizeof code);
        print_message("  %d.%d runs %s %s\n", cc[i] / 10, cc[i] % 10, code, kind == GPU_CODE_PTX ? "(PTX)" : "");
        if (kind == GPU_CODE_NONE) fail_msg("the default build has no code for compute capability %d", cc[i]);
        // The generations a workshop meets get machine code of their own: no JIT wait at
        // start-up, hardware FP8 conversions on 8.9, Hopper's wgmma kernels on 9.0.
        if (cc[i] <= 90) {
            char own[16];
            snprintf(own, sizeof own, "sm_%d%s", cc[i], cc[i] == 90 ? "a" : "");
            if (cc[i] == 87) snprintf(own, sizeof own, "sm_86");  // Orin: 8.6's code is its own
            if (kind != GPU_CODE_SASS || strcmp(code, own))
                fail_msg("%d.%d runs %s, not its own machine code %s", cc[i] / 10, cc[i] % 10, code, own);
        }
    }

    assert_true(bazelrc_archs("portable", archs, sizeof archs));
    assert_string_equal(archs, "compute_80");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shared_memory_per_generation),
        cmocka_unit_test(test_features_per_generation),
        cmocka_unit_test(test_older_than_ampere_is_refused_in_one_sentence),
        cmocka_unit_test(test_fp8_needs_8_9),
        cmocka_unit_test(test_parse_compute_capability),
        cmocka_unit_test(test_code_each_gpu_runs),
        cmocka_unit_test(test_default_build_runs_on_every_generation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
