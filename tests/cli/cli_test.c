// Bad input on the command line must give a clear message and a non-zero exit, never a
// crash: runs the real binaries (Bazel puts them in the test's runfiles) and checks
// their exit status and what they print.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/io/weights_io.h"
#include "tests/test_util.h"

typedef struct {
    int exit_code;   // -1: killed by a signal
    char output[8192];
} RunResult;

// Runs argv (NULL-terminated), capturing stdout and stderr together; with GPU_SIMULATE_CC set
// to simulate_cc in its environment unless that is NULL.
static RunResult run_as(const char *simulate_cc, char *const argv[]) {
    RunResult r = {0};
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(pipefd[1], 1);
        dup2(pipefd[1], 2);
        close(pipefd[0]);
        if (simulate_cc) setenv("GPU_SIMULATE_CC", simulate_cc, 1);
        execv(argv[0], argv);
        perror("execv");
        _exit(127);
    }
    close(pipefd[1]);
    size_t used = 0;
    ssize_t got;
    while ((got = read(pipefd[0], r.output + used, sizeof r.output - 1 - used)) > 0) used += (size_t)got;
    close(pipefd[0]);
    int status;
    waitpid(pid, &status, 0);
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return r;
}

static void expect_as(const char *simulate_cc, char *const argv[], int exit_code, const char *message) {
    RunResult r = run_as(simulate_cc, argv);
    print_message("  $ %s%s %s %s ...  -> exit %d\n", simulate_cc ? "GPU_SIMULATE_CC=" : "", simulate_cc ? simulate_cc : "",
                  argv[0], argv[1] ? argv[1] : "", r.exit_code);
    if (r.exit_code != exit_code || !strstr(r.output, message)) {
        fail_msg("expected exit %d and '%s'; got exit %d and:\n%s", exit_code, message, r.exit_code,
                 r.output);
    }
}

static void expect(char *const argv[], int exit_code, const char *message) { expect_as(NULL, argv, exit_code, message); }

// The binaries: in Bazel's runfiles, or beside this test (the GPU machine's flat folder of
// packed binaries).
static char COMPARE[4096] = "steps/compare/compare";
static char STEP01[4096] = "steps/01_naive/step01_naive";
static char STEP05[4096] = "steps/05_fp8/step05_fp8";
static char STEP06[4096] = "steps/06_parallel_layers/step06_parallel_layers";

static void locate(char *path, size_t size, const char *argv0, const char *name) {
    if (access(path, X_OK) == 0) return;
    snprintf(path, size, "%s", argv0);
    char *slash = strrchr(path, '/');
    size_t dir_len = slash ? (size_t)(slash + 1 - path) : 0;
    snprintf(path + dir_len, size - dir_len, "%s", name);
}

static char tmpdir[256];

static const char *tmp_file(const char *name) {
    static char buf[4][512];
    static int next;
    char *b = buf[next++ % 4];
    snprintf(b, 512, "%s/%s", tmpdir, name);
    return b;
}

static void test_unknown_flag(void **state) {
    (void)state;
    expect((char *const[]){COMPARE, "--bogus", "1", NULL}, 1, "unknown flag '--bogus'");
}

static void test_hidden_not_divisible_by_heads(void **state) {
    (void)state;
    expect((char *const[]){COMPARE, "--hidden", "100", "--heads", "3", NULL}, 1,
           "hidden (100) must be divisible by heads (3)");
}

static void test_bad_values(void **state) {
    (void)state;
    expect((char *const[]){COMPARE, "--dtype", "fp64", NULL}, 1, "--dtype expects fp16 or bf16");
    expect((char *const[]){COMPARE, "--dropout", "1.5", NULL}, 1, "probability in [0, 1)");
    expect((char *const[]){COMPARE, "--seq", "-4", NULL}, 1, "--seq expects an integer");
    expect((char *const[]){COMPARE, "--seq", NULL}, 1, "--seq needs a value");
    expect((char *const[]){COMPARE, "--preset", "huge", NULL}, 1, "unknown preset 'huge'");
}

// Weight and input files are checked before the GPU is looked for, so these run anywhere.
static void test_missing_weights_file(void **state) {
    (void)state;
    expect((char *const[]){STEP01, "--preset", "tiny", "--weights", "/nonexistent/w.safetensors", NULL}, 1,
           "cannot open '/nonexistent/w.safetensors'");
}

static void test_weights_of_another_shape(void **state) {
    (void)state;
    // Weights saved for hidden 128 do not fit a layer of hidden 64.
    LayerConfig c;
    layer_config_preset("tiny", &c);
    LayerParams p;
    layer_params_alloc(&c, &p);
    layer_params_init_random(&c, 1, &p);
    save_layer_params(tmp_file("w128.safetensors"), &c, &p);
    layer_params_free(&p);
    expect((char *const[]){STEP01, "--preset", "tiny", "--hidden", "64", "--weights",
                           (char *)tmp_file("w128.safetensors"), NULL}, 1,
           "tensor 'ln1.weight' has shape [128], but the layer (hidden 64");
    // A truncated copy of a good file.
    FILE *in = fopen(tmp_file("w128.safetensors"), "rb"), *out = fopen(tmp_file("cut.safetensors"), "wb");
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, in);
    fwrite(buf, 1, n, out);
    fclose(in);
    fclose(out);
    expect((char *const[]){STEP01, "--preset", "tiny", "--weights", (char *)tmp_file("cut.safetensors"), NULL},
           1, "truncated");
}

// The steps' own flags are checked like the shared ones.
static void test_step_flags(void **state) {
    (void)state;
    expect((char *const[]){STEP05, "--fp8-format", "e5m2", NULL}, 1, "--fp8-format expects hybrid or e4m3");
    expect((char *const[]){STEP05, "--amax-history", "0", NULL}, 1, "--amax-history expects 1..1024");
    expect((char *const[]){STEP05, "--amax-algo", "mean", NULL}, 1, "--amax-algo expects max or most_recent");
    expect((char *const[]){STEP05, "--help", NULL}, 0, "--margin N");
    expect((char *const[]){STEP06, "--help", NULL}, 0, "--unfused");
    expect((char *const[]){STEP06, "--help", NULL}, 0, "--deterministic");
    // A head size the flash-attention kernels do not have is refused before any GPU work.
    expect((char *const[]){STEP06, "--hidden", "96", "--heads", "1", "--ffn", "64", NULL}, 1,
           "support head_dim 64 and 128");
}

static void test_no_gpu(void **state) {
    (void)state;
    if (test_have_gpu()) {
        print_message("[ SKIP     ] there is a GPU here: the no-GPU message cannot be tested\n");
        skip();
    }
    expect((char *const[]){STEP01, "--preset", "tiny", NULL}, 1, "needs a CUDA GPU");
}

// The wrong GPU, simulated on the GPU at hand (GPU_SIMULATE_CC, common/gpu/gpu.h): one
// sentence naming what is missing, the GPU and the minimum, and exit 1 before any work.
static void test_gpu_too_old(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    expect_as("8.0", (char *const[]){STEP05, "--check", NULL}, 1,
              "needs FP8 tensor cores (compute capability 8.9 or newer");
    expect_as("8.6", (char *const[]){STEP06, "--fp8", "--check", NULL}, 1, "(GPU_SIMULATE_CC=8.6) is compute capability 8.6");
    expect_as("8.0", (char *const[]){COMPARE, "--steps", "05", "--skip-check", "--iters", "1", NULL}, 0,
              "step 05_fp8 skipped: step 05_fp8 (FP8 with delayed scaling) needs FP8 tensor cores");
    expect_as("7.5", (char *const[]){STEP01, "--preset", "tiny", NULL}, 1,
              "this program needs bf16 tensor cores (compute capability 8.0 or newer");
    expect_as("7.0", (char *const[]){COMPARE, NULL}, 1, "is compute capability 7.0");
    expect_as("8.O", (char *const[]){STEP01, "--preset", "tiny", NULL}, 1,
              "GPU_SIMULATE_CC=8.O: expected a compute capability such as 8.0");
    expect_as("99.0", (char *const[]){STEP01, "--preset", "tiny", NULL}, 1, "can only be made to act as an older one");
}

int main(int argc, char **argv) {
    (void)argc;
    locate(COMPARE, sizeof COMPARE, argv[0], "compare");
    locate(STEP01, sizeof STEP01, argv[0], "step01_naive");
    locate(STEP05, sizeof STEP05, argv[0], "step05_fp8");
    locate(STEP06, sizeof STEP06, argv[0], "step06_parallel_layers");
    const char *t = getenv("TEST_TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/cli_XXXXXX", t ? t : "/tmp");
    if (!mkdtemp(tmpdir)) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_missing_weights_file),
        cmocka_unit_test(test_weights_of_another_shape),
        cmocka_unit_test(test_step_flags),
        cmocka_unit_test(test_no_gpu),
        cmocka_unit_test(test_gpu_too_old),
        cmocka_unit_test(test_unknown_flag),
        cmocka_unit_test(test_hidden_not_divisible_by_heads),
        cmocka_unit_test(test_bad_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
