// Bad input on the command line must give a clear message and a non-zero exit, never a
// crash: runs the real binaries (Bazel puts them in the test's runfiles) and checks
// their exit status and what they print.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/io/safetensors.h"
#include "common/io/weights_io.h"
#include "tests/test_util.h"

typedef struct {
    int exit_code;   // -1: killed by a signal
    char output[32768];
} RunResult;

// Runs argv (NULL-terminated), capturing stdout and stderr together; with the environment
// variable `name` set to `value` unless either is NULL.
static RunResult run_env(const char *name, const char *value, char *const argv[]) {
    RunResult r = {0};
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(pipefd[1], 1);
        dup2(pipefd[1], 2);
        close(pipefd[0]);
        if (name && value) setenv(name, value, 1);
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

// run_env with GPU_SIMULATE_CC set to simulate_cc (unless NULL).
static RunResult run_as(const char *simulate_cc, char *const argv[]) {
    return run_env("GPU_SIMULATE_CC", simulate_cc, argv);
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
static char STEP02[4096] = "steps/02_te_modules/step02_te_modules";
static char STEP04[4096] = "steps/04_transformer_layer/step04_transformer_layer";
static char DEMO[4096] = "steps/05_fp8/step05_train_demo";
static char ATTN_BENCH[4096] = "kernels/attention/attention_bench";
static char LN_BENCH[4096] = "kernels/layernorm/layernorm_bench";
static char GEMM_BENCH[4096] = "modules/gemm_bench";
static char FP8_BENCH[4096] = "modules/fp8_bench";
static char EPILOGUE_BENCH[4096] = "modules/epilogue_bench";
static char FLASH_TEST[4096] = "tests/attention/flash_attention_test";

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
    expect((char *const[]){COMPARE, "--dropout", "1.5", NULL}, 1, "--dropout expects a probability in [0, 1)");
    expect((char *const[]){COMPARE, "--seq", "-4", NULL}, 1, "--seq expects an integer");
    expect((char *const[]){COMPARE, "--seq", NULL}, 1, "--seq needs a value");
    expect((char *const[]){COMPARE, "--preset", "huge", NULL}, 1, "unknown preset 'huge'");
}

// Weight and input files are checked before the GPU is looked for, so these run anywhere.
static void test_missing_weights_file(void **state) {
    (void)state;
    expect((char *const[]){STEP01, "--preset", "tiny", "--weights", "/nonexistent/w.safetensors", NULL}, 1,
           "--weights: cannot open '/nonexistent/w.safetensors'");
}

// An input flag's path that is no file: named with the flag, before any work.
static void test_input_not_a_file(void **state) {
    (void)state;
    expect((char *const[]){STEP01, "--preset", "tiny", "--input", "/tmp", NULL}, 1,
           "--input: '/tmp' is not a regular file");
}

// A test filter that matches no test: a message and exit 1, not "0 tests PASSED" (any machine:
// the filter is checked before the GPU is looked for).
static void test_flash_test_filter_matches_nothing(void **state) {
    (void)state;
    RunResult r = run_env("FLASH_TEST_ONLY", "no_such_test*", (char *const[]){FLASH_TEST, NULL});
    if (r.exit_code != 1 || !strstr(r.output, "FLASH_TEST_ONLY='no_such_test*' matches none"))
        fail_msg("expected exit 1 and the no-match message; got exit %d and:\n%s", r.exit_code, r.output);
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
    expect((char *const[]){STEP05, "--amax-history", "0", NULL}, 1, "--amax-history expects an integer in [1, 1024]");
    expect((char *const[]){STEP05, "--amax-algo", "mean", NULL}, 1, "--amax-algo expects max or most_recent");
    expect((char *const[]){STEP05, "--help", NULL}, 0, "--margin N");
    expect((char *const[]){STEP06, "--help", NULL}, 0, "--unfused");
    expect((char *const[]){STEP06, "--help", NULL}, 0, "--deterministic");
    // A head size the flash-attention kernels do not have is refused before any GPU work.
    expect((char *const[]){STEP06, "--hidden", "96", "--heads", "1", "--ffn", "64", NULL}, 1,
           "support head_dim 64 and 128, not 96");
    expect((char *const[]){STEP06, "--hidden", "96", "--heads", "1", "--ffn", "64", NULL}, 1,
           "hidden 96 / heads 1 = head_dim 96");
}

// What a run that passed the flags says next: without a GPU it stops there; with one it runs.
static void expect_accepted(char *const argv[]);

// Step 05's --fp8-attention (the FP8 attention forward): listed by its --help; what the FP8
// forward cannot run is refused with the flag named, before any GPU is looked for (so these run
// anywhere), in either order of the flags; the other steps do not know it.
static void test_fp8_attention_flag(void **state) {
    (void)state;
    expect((char *const[]){STEP05, "--help", NULL}, 0, "--fp8-attention");
    expect((char *const[]){STEP05, "--fp8-attention=1", NULL}, 1, "--fp8-attention takes no value");
    // The quickstart's dropout is 0.1: the message says how to turn it off - either flag, since
    // the later one wins (--dropout 0 then --attn-dropout 0.1 leaves attention dropout 0.1).
    expect((char *const[]){STEP05, "--fp8-attention", NULL}, 1,
           "--fp8-attention: the FP8 attention forward has no dropout");
    expect((char *const[]){STEP05, "--fp8-attention", NULL}, 1, "set it to 0 (--dropout 0, or --attn-dropout 0");
    expect((char *const[]){STEP05, "--fp8-attention", "--dropout", "0", "--attn-dropout", "0.1", NULL}, 1,
           "attention dropout is 0.1: set it to 0");
    expect((char *const[]){STEP05, "--dropout", "0", "--causal", "--fp8-attention", NULL}, 1,
           "--fp8-attention: the FP8 attention forward has no causal mask");
    // --check's small preset has head_dim 64.
    expect((char *const[]){STEP05, "--check", "--fp8-attention", "--dropout", "0", NULL}, 1,
           "needs head_dim 128 (hidden / heads), not 64");
    expect((char *const[]){STEP05, "--dropout", "0", "--fp8-attention", "--hidden", "512", "--heads", "8", "--ffn",
                           "1024", NULL}, 1, "needs head_dim 128 (hidden / heads), not 64");
    // Without dropout, at head_dim 128, the flags pass: without a GPU the run stops only there.
    // (With one it would run, or be refused for a GPU or build without wgmma: test_gpu_too_old,
    // and tests/fp8/fp8_attention_step_test runs it.)
    if (!test_have_gpu()) {
        expect((char *const[]){STEP05, "--check", "--preset", "small", "--heads", "2", "--fp8-attention", "--dropout",
                               "0", NULL}, 1, "needs a CUDA GPU");
        // --attn-dropout 0 alone will do (the hidden dropout stays).
        expect((char *const[]){STEP05, "--fp8-attention", "--attn-dropout", "0", "--preset", "small", "--heads", "2",
                               "--iters", "1", NULL}, 1, "needs a CUDA GPU");
    }
    // The steps that have no FP8 attention do not know the flag.
    expect((char *const[]){STEP01, "--fp8-attention", NULL}, 1, "unknown flag '--fp8-attention'");
    expect((char *const[]){STEP04, "--fp8-attention", NULL}, 1, "unknown flag '--fp8-attention'");
    expect((char *const[]){STEP06, "--fp8", "--fp8-attention", NULL}, 1, "unknown flag '--fp8-attention'");
    expect((char *const[]){COMPARE, "--fp8-attention", NULL}, 1, "unknown flag '--fp8-attention'");
}

// A bad value of an environment switch (ATTENTION_*, EPILOGUE_*, GEMM_AUTOTUNE, GPU_SIMULATE_CC,
// GPU_PHASE_TIMER: require_valid_environment) is refused with the variable's own message before
// any GPU work, on any machine, as a bad flag is.
static void test_attention_switch_values(void **state) {
    (void)state;
    const struct {
        const char *name, *value, *message;
    } bad[] = {
        {"ATTENTION_BACKWARD_PERSISTENT", "2", "ATTENTION_BACKWARD_PERSISTENT must be 1 or 0 (or unset), not \"2\""},
        {"ATTENTION_CAUSAL_ORDER", "zigzag", "ATTENTION_CAUSAL_ORDER must be heavy-first, natural or"},
        {"EPILOGUE_DGELU", "bogus", "EPILOGUE_DGELU=bogus: expected gemm (the epilogue in the GEMM) or kernel"},
        {"GEMM_AUTOTUNE", "maybe", "GEMM_AUTOTUNE=maybe: expected 1"},
        {"GPU_SIMULATE_CC", "banana", "GPU_SIMULATE_CC=banana: expected a compute capability"},
        {"GPU_PHASE_TIMER", "banana", "GPU_PHASE_TIMER=banana: expected cupti"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *const step[] = {STEP04, "--iters", "1", NULL}, *const cmp[] = {COMPARE, "--iters", "1", NULL};
        for (int which = 0; which < 2; which++) {
            RunResult r = run_env(bad[i].name, bad[i].value, which ? cmp : step);
            print_message("  $ %s=%s %s ...  -> exit %d\n", bad[i].name, bad[i].value, which ? cmp[0] : step[0],
                          r.exit_code);
            if (r.exit_code != 1 || !strstr(r.output, bad[i].message))
                fail_msg("expected exit 1 and '%s'; got exit %d and:\n%s", bad[i].message, r.exit_code, r.output);
        }
    }
}

// Step 04's --no-overlap-wgrad (the MLP's wgrads on one stream, not a second): a switch of step 04 only,
// listed by its --help, accepted with --check and --deterministic, refused elsewhere.
static void test_overlap_wgrad_flag(void **state) {
    (void)state;
    expect((char *const[]){STEP04, "--help", NULL}, 0, "--no-overlap-wgrad");
    expect((char *const[]){STEP04, "--no-overlap-wgrad=1", NULL}, 1, "--no-overlap-wgrad takes no value");
    expect((char *const[]){STEP04, "--no-overlap-wgrad", "--bogus", NULL}, 1, "unknown flag '--bogus'");
    // The steps whose layer is not step 04's TransformerLayer do not know it.
    expect((char *const[]){STEP01, "--no-overlap-wgrad", NULL}, 1, "unknown flag '--no-overlap-wgrad'");
    expect((char *const[]){STEP05, "--no-overlap-wgrad", NULL}, 1, "unknown flag '--no-overlap-wgrad'");
    expect((char *const[]){STEP06, "--no-overlap-wgrad", NULL}, 1, "unknown flag '--no-overlap-wgrad'");
    expect((char *const[]){COMPARE, "--no-overlap-wgrad", NULL}, 1, "unknown flag '--no-overlap-wgrad'");
    // The shared rules still hold with it: --check with --breakdown is refused.
    expect((char *const[]){STEP04, "--no-overlap-wgrad", "--check", "--breakdown", NULL}, 1,
           "--breakdown times a step and --check checks one");
    expect_accepted((char *const[]){STEP04, "--no-overlap-wgrad", "--preset", "tiny", "--iters", "2", NULL});
    expect_accepted((char *const[]){STEP04, "--preset", "tiny", "--check", "--no-overlap-wgrad", NULL});
    expect_accepted((char *const[]){STEP04, "--deterministic", "--no-overlap-wgrad", "--check", NULL});
}

static void test_no_gpu(void **state) {
    (void)state;
    if (test_have_gpu()) {
        print_message("[ SKIP     ] there is a GPU here: the no-GPU message cannot be tested\n");
        skip();
    }
    expect((char *const[]){STEP01, "--preset", "tiny", NULL}, 1, "needs a CUDA GPU");
}


// ---- issue 18's examples, one kind each ------------------------------------------------------

// What a run that passed the flags says next: without a GPU it stops there; with one it runs.
static void expect_accepted(char *const argv[]) {
    if (test_have_gpu()) expect(argv, 0, "");
    else expect(argv, 1, "needs a CUDA GPU");
}

// 1. The preset applies first, wherever it stands.
static void test_preset_position(void **state) {
    (void)state;
    // --hidden 12 --heads 3 used to be undone by the later preset, and the run went ahead.
    expect((char *const[]){STEP01, "--hidden", "12", "--heads", "3", "--preset", "tiny", NULL}, 1,
           "hidden (12) and ffn (512) must be multiples of 8");
    // compare --dtype bf16 --preset small (its own --help's form) used to run fp16.
    if (test_have_gpu()) return;  // the check below is the CPU-only run's JSON
    const char *json = tmp_file("preset.json");
    expect((char *const[]){COMPARE, "--dtype", "bf16", "--preset", "small", "--json", (char *)json, NULL}, 0,
           "wrote");
    FILE *f = fopen(json, "r");
    char text[4096] = "";
    assert_non_null(f);
    text[fread(text, 1, sizeof text - 1, f)] = 0;
    fclose(f);
    if (!strstr(text, "\"dtype\": \"bf16\"")) fail_msg("compare's JSON is not bf16:\n%s", text);
}

// 2. Numbers parsed strictly, with ranges, in every binary.
static void test_strict_numbers(void **state) {
    (void)state;
    expect((char *const[]){STEP05, "--amax-history", "16abc", NULL}, 1, "--amax-history expects an integer in [1, 1024], got '16abc'");
    expect((char *const[]){STEP05, "--amax-history", "4294967312", NULL}, 1, "got '4294967312'");
    expect((char *const[]){STEP05, "--margin", "1.5", NULL}, 1, "--margin expects an integer in [0, 30], got '1.5'");
    expect((char *const[]){STEP05, "--margin", "30x", NULL}, 1, "got '30x'");
    expect((char *const[]){STEP06, "--fp8", "--margin", "2x", NULL}, 1, "--margin expects an integer in [0, 30], got '2x'");
    expect((char *const[]){DEMO, "--steps", "10abc", NULL}, 1, "--steps expects an integer in [1, 100000], got '10abc'");
    expect((char *const[]){DEMO, "--steps", "4294967297", NULL}, 1, "got '4294967297'");
    expect((char *const[]){DEMO, "--lr", "1.5xyz", NULL}, 1, "--lr expects a number in (0, 100), got '1.5xyz'");
    expect((char *const[]){ATTN_BENCH, "--seq", "2048x", NULL}, 1, "--seq expects an integer");
    expect((char *const[]){LN_BENCH, "--cols", "20480", NULL}, 1, "--cols expects an integer in [8, 16384]");
    expect((char *const[]){LN_BENCH, "--cols", "100", NULL}, 1, "multiple of 8");
    expect((char *const[]){GEMM_BENCH, "8192", NULL}, 1, "unexpected argument '8192'");
    expect((char *const[]){FP8_BENCH, "--iters", "3", NULL}, 1, "unknown flag '--iters'");
    expect((char *const[]){GEMM_BENCH, "--help", NULL}, 0, "usage: gemm_bench");
    expect((char *const[]){EPILOGUE_BENCH, "--help", NULL}, 0, "usage: epilogue_bench");
    expect((char *const[]){EPILOGUE_BENCH, "--reps", "0", NULL}, 1, "--reps expects an integer in [1, 10000], got '0'");
    expect((char *const[]){EPILOGUE_BENCH, "--dtype", "fp32", NULL}, 1, "--dtype");
    expect((char *const[]){ATTN_BENCH, "--help", NULL}, 0, "usage: attention_bench");
}

// 3. Values beyond the dtype in --input / --weights files are refused, named and placed.
static void test_values_beyond_dtype(void **state) {
    (void)state;
    LayerConfig c;
    layer_config_preset("tiny", &c);
    LayerInputs in;
    layer_inputs_alloc(&c, &in);
    layer_inputs_init_random(&c, 1, &in);
    in.x[1 * c.hidden + 17] = 66246.0f;  // token 1 = (seq 0, batch 1), element 17
    const int64_t shape[3] = {c.seq, c.batch, c.hidden};
    StWriteEntry e[2] = {{.name = "x", .ndim = 3, .data = in.x}, {.name = "dy", .ndim = 3, .data = in.dy}};
    memcpy(e[0].shape, shape, sizeof shape);
    memcpy(e[1].shape, shape, sizeof shape);
    st_write(tmp_file("big_x.safetensors"), e, 2);
    expect((char *const[]){STEP01, "--preset", "tiny", "--input", (char *)tmp_file("big_x.safetensors"), NULL}, 1,
           "tensor 'x' holds 66246 at index [0, 1, 17] (element 145 of 4096), outside fp16's range [-65504, 65504]");
    // bf16 holds it: the same file runs.
    expect_accepted((char *const[]){STEP01, "--preset", "tiny", "--dtype", "bf16", "--iters", "1", "--input",
                                    (char *)tmp_file("big_x.safetensors"), NULL});
    layer_inputs_free(&in);

    LayerParams p;
    layer_params_alloc(&c, &p);
    layer_params_init_random(&c, 1, &p);
    p.tensor[P_FC1_WEIGHT][5] = -70000.0f;
    save_layer_params(tmp_file("big_w.safetensors"), &c, &p);
    expect((char *const[]){STEP01, "--preset", "tiny", "--weights", (char *)tmp_file("big_w.safetensors"), NULL}, 1,
           "tensor 'mlp.linear1.weight' holds -70000 at index [0, 5]");
    layer_params_free(&p);
}

// 4. Words that say what is wrong.
static void test_clear_words(void **state) {
    (void)state;
    expect((char *const[]){STEP01, "--preset", "tiny", "--bogus", NULL}, 1, "unknown flag '--bogus'");
    expect_accepted((char *const[]){STEP01, "--preset=tiny", "--iters=1", "--warmup=0", NULL});
    expect((char *const[]){STEP06, "--fp8", "--unfused", NULL}, 1, "--fp8 and --unfused cannot be combined");
    expect((char *const[]){STEP06, "--margin", "2", NULL}, 1, "--margin sets the FP8 recipe, which only --fp8 uses");
    expect((char *const[]){STEP01, "--dropout", "0.001", NULL}, 1, "nearest, 0/256 = 0");
    expect((char *const[]){STEP01, "--dropout", "0.999", NULL}, 1, "255/256 = 0.9961");
    expect((char *const[]){STEP01, "--check", "--iters", "5", NULL}, 1, "--check runs one step");
    expect((char *const[]){STEP01, "--seq", "1048576", "--batch", "65536", NULL}, 1, "68719476736 tokens");
    // More host memory than any machine has: said with the figure, before any allocation.
    expect((char *const[]){STEP01, "--preset", "tiny", "--hidden", "1048576", "--heads", "4096", "--ffn", "8", NULL},
           1, "GiB of host memory");
    // The LayerNorm kernels' width, at configuration time: before the weights are even read.
    expect((char *const[]){STEP02, "--hidden", "20480", "--heads", "160", "--weights", "/nonexistent/w.safetensors",
                           NULL}, 1, "at most 16384 (hidden is 20480)");
}

// 5. Output folders checked before any work.
static void test_outputs_checked_first(void **state) {
    (void)state;
    expect((char *const[]){STEP01, "--preset", "tiny", "--save", "/nonexistent/dir/r.safetensors", NULL}, 1,
           "--save /nonexistent/dir/r.safetensors: cannot write there");
    expect((char *const[]){STEP01, "--preset", "tiny", "--json", "/nonexistent/dir/r.json", NULL}, 1,
           "--json /nonexistent/dir/r.json: cannot write there");
    expect((char *const[]){STEP05, "--preset", "tiny", "--fp8-log", "/nonexistent/dir/f.csv", NULL}, 1,
           "--fp8-log /nonexistent/dir/f.csv: cannot write there");
    expect((char *const[]){COMPARE, "--svg", "/nonexistent/dir/c.svg", NULL}, 1, "--svg /nonexistent/dir/c.svg: cannot write there");
}

// 6. compare without a GPU writes what it says; compare refuses what it cannot do.
static void test_compare(void **state) {
    (void)state;
    expect((char *const[]){COMPARE, "--steps", "99", NULL}, 1, "compare has no step '99'");
    expect((char *const[]){COMPARE, "--steps", "07", NULL}, 1, "runs on its own: step07_tensor_parallel");
    expect((char *const[]){COMPARE, "--steps=", NULL}, 1, "--steps '' names no step");
    expect((char *const[]){COMPARE, "--steps", ",", NULL}, 1, "--steps ',' names no step");
    expect((char *const[]){COMPARE, "--steps", "7", NULL}, 1, "runs on its own: step07_tensor_parallel");
    expect((char *const[]){COMPARE, "--pytorch", "/nonexistent", NULL}, 1, "--pytorch /nonexistent");
    expect((char *const[]){COMPARE, "--json", "/nonexistent/dir/c.json", NULL}, 1, "cannot write there");
    expect((char *const[]){COMPARE, "--check", NULL}, 1, "drop --check");
    expect((char *const[]){COMPARE, "--weights", "w.safetensors", NULL}, 1, "--weights would be ignored");
    expect((char *const[]){COMPARE, "--steps", "04", "--hidden", "96", "--heads", "1", "--ffn", "64", NULL}, 1,
           "step 04_transformer_layer cannot run this configuration");
    if (test_have_gpu()) {
        print_message("[ SKIP     ] the CPU-only comparison: there is a GPU here\n");
        return;
    }
    const char *json = tmp_file("c.json"), *svg = tmp_file("c.svg");
    expect((char *const[]){COMPARE, "--json", (char *)json, "--svg", (char *)svg, NULL}, 0, "No usable CUDA GPU here");
    expect((char *const[]){COMPARE, "--breakdown", NULL}, 0, "--breakdown: not run (it times GPU kernels");
    FILE *f = fopen(json, "r");
    assert_non_null(f);
    char text[4096] = "";
    text[fread(text, 1, sizeof text - 1, f)] = 0;
    fclose(f);
    if (!strstr(text, "\"step\": \"reference\"") || !strstr(text, "\"mean_ms\"") || !strstr(text, "\"gpu\": \"none"))
        fail_msg("compare's JSON without a GPU lacks the reference row:\n%s", text);
    if (!strstr(text, "\"check_passed\": null") || !strstr(text, "\"computed_in\": \"float32"))
        fail_msg("compare's JSON without a GPU gives stand-in numbers or omits what it computed in:\n%s", text);
    f = fopen(svg, "r");
    assert_non_null(f);
    text[fread(text, 1, sizeof text - 1, f)] = 0;
    fclose(f);
    if (!strstr(text, "<svg") || !strstr(text, "reference (CPU, float32)") || !strstr(text, "</svg>"))
        fail_msg("compare's SVG without a GPU lacks the reference bar:\n%s", text);
}

// The wrong GPU, simulated on the GPU at hand (GPU_SIMULATE_CC, common/gpu/gpu.h): one
// sentence naming what is missing, the GPU and the minimum, and exit 1 before any work.
static void test_gpu_too_old(void **state) {
    (void)state;
    SKIP_WITHOUT_GPU();
    expect_as("8.0", (char *const[]){STEP05, "--check", NULL}, 1,
              "needs FP8 tensor cores (compute capability 8.9 or newer");
    expect_as("8.6", (char *const[]){STEP06, "--fp8", "--check", NULL}, 1, "(GPU_SIMULATE_CC=8.6) is compute capability 8.6");
    // --fp8-attention needs wgmma (9.0) beyond step 05's 8.9: refused on an FP8 GPU without it.
    expect_as("8.9", (char *const[]){STEP05, "--check", "--preset", "small", "--heads", "2", "--fp8-attention",
                                     "--dropout", "0", NULL}, 1,
              "step 05_fp8's --fp8-attention (the FP8 attention forward, wgmma on E4M3) needs wgmma and TMA "
              "(compute capability 9.0");
    expect_as("8.9", (char *const[]){STEP05, "--check", "--preset", "small", "--heads", "2", "--fp8-attention",
                                     "--dropout", "0", NULL}, 1, "(GPU_SIMULATE_CC=8.9) is compute capability 8.9");
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
    locate(STEP02, sizeof STEP02, argv[0], "step02_te_modules");
    locate(STEP04, sizeof STEP04, argv[0], "step04_transformer_layer");
    locate(DEMO, sizeof DEMO, argv[0], "step05_train_demo");
    locate(ATTN_BENCH, sizeof ATTN_BENCH, argv[0], "attention_bench");
    locate(LN_BENCH, sizeof LN_BENCH, argv[0], "layernorm_bench");
    locate(GEMM_BENCH, sizeof GEMM_BENCH, argv[0], "gemm_bench");
    locate(FP8_BENCH, sizeof FP8_BENCH, argv[0], "fp8_bench");
    locate(EPILOGUE_BENCH, sizeof EPILOGUE_BENCH, argv[0], "epilogue_bench");
    locate(FLASH_TEST, sizeof FLASH_TEST, argv[0], "flash_attention_test");
    const char *t = getenv("TEST_TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/cli_XXXXXX", t ? t : "/tmp");
    if (!mkdtemp(tmpdir)) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_missing_weights_file),
        cmocka_unit_test(test_input_not_a_file),
        cmocka_unit_test(test_flash_test_filter_matches_nothing),
        cmocka_unit_test(test_weights_of_another_shape),
        cmocka_unit_test(test_step_flags),
        cmocka_unit_test(test_overlap_wgrad_flag),
        cmocka_unit_test(test_fp8_attention_flag),
        cmocka_unit_test(test_attention_switch_values),
        cmocka_unit_test(test_no_gpu),
        cmocka_unit_test(test_gpu_too_old),
        cmocka_unit_test(test_unknown_flag),
        cmocka_unit_test(test_hidden_not_divisible_by_heads),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_preset_position),
        cmocka_unit_test(test_strict_numbers),
        cmocka_unit_test(test_values_beyond_dtype),
        cmocka_unit_test(test_clear_words),
        cmocka_unit_test(test_outputs_checked_first),
        cmocka_unit_test(test_compare),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
