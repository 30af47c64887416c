// Step 07's bad input, on any machine (these fail before a GPU is touched, or because there
// are not enough): a clear message, exit 1, and no rank left waiting.
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/gpu/gpu.h"
#include "tests/test_util.h"

static char TP_BIN[4096] = "steps/07_tensor_parallel/step07_tensor_parallel";

// Runs argv with extra environment settings "NAME=value" (NULL-terminated), capturing
// stdout and stderr; returns the exit status (-1 if killed) and fills out.
static int run(char *const argv[], const char *const env[], char *out, size_t size) {
    int fd[2];
    assert_int_equal(pipe(fd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fd[1], 1), dup2(fd[1], 2), close(fd[0]);
        for (int i = 0; env && env[i]; i++) putenv((char *)env[i]);
        execv(argv[0], argv);
        perror("execv");
        _exit(127);
    }
    close(fd[1]);
    size_t used = 0;
    ssize_t got;
    while ((got = read(fd[0], out + used, size - 1 - used)) > 0) used += (size_t)got;
    out[used] = 0;
    close(fd[0]);
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void expect(char *const argv[], const char *const env[], const char *message) {
    char out[8192];
    int code = run(argv, env, out, sizeof out);
    print_message("  $ step07_tensor_parallel %s %s ... -> exit %d: %s", argv[1] ? argv[1] : "",
                  argv[1] && argv[2] ? argv[2] : "", code, out);
    if (code != 1 || !strstr(out, message)) fail_msg("expected exit 1 and '%s'; got exit %d and:\n%s", message, code, out);
}

static void test_tp_not_dividing_heads(void **state) {
    (void)state;
    expect((char *const[]){TP_BIN, "--tp", "3", NULL}, NULL, "must divide the number of heads (32)");
    expect((char *const[]){TP_BIN, "--tp", "4", "--preset", "tiny", NULL}, NULL, "must divide the number of heads (2)");
}

static void test_tp_from_environment_not_dividing_heads(void **state) {
    (void)state;
    const char *env[] = {"RANK=0", "WORLD_SIZE=3", NULL};
    expect((char *const[]){TP_BIN, "--preset", "small", NULL}, env, "must divide the number of heads (4)");
}

static void test_bad_flags(void **state) {
    (void)state;
    expect((char *const[]){TP_BIN, "--tp", "0", NULL}, NULL, "--tp expects an integer in [1, 64], got '0'");
    expect((char *const[]){TP_BIN, "--bogus", "1", NULL}, NULL, "unknown flag '--bogus'");
    const char *env[] = {"RANK=1", "WORLD_SIZE=2", NULL};
    expect((char *const[]){TP_BIN, "--tp", "2", NULL}, env, "drop --tp");
    const char *bad[] = {"RANK=2", "WORLD_SIZE=2", NULL};
    expect((char *const[]){TP_BIN, "--preset", "tiny", NULL}, bad, "out of range");
    expect((char *const[]){TP_BIN, "--block", "groupnorm", NULL}, NULL, "--block expects local or exact, got 'groupnorm'");
    expect((char *const[]){TP_BIN, "--block", "exact", "--parallel", NULL}, NULL, "drop --parallel");
    expect((char *const[]){TP_BIN, "--check", "--preset", "quickstart", NULL}, NULL, "--preset small");
    expect((char *const[]){TP_BIN, "--weights", "/nonexistent/w.safetensors", "--preset", "tiny", NULL}, NULL,
           "cannot open '/nonexistent/w.safetensors'");
}

// The shared flags go through the driver's parser like every step's (before, step 07 had a
// parser of its own and answered "unknown flag" to them): each is taken, as the refusal
// that follows from its value shows.
static void test_shared_flags(void **state) {
    (void)state;
    expect((char *const[]){TP_BIN, "--preset", "small", "--heads", "2", "--dropout", "0.2", "--causal", "--seed",
                           "5", "--warmup", "1", "--iters", "2", "--tp", "4", NULL},
           NULL, "must divide the number of heads (2)");
    expect((char *const[]){TP_BIN, "--preset", "small", "--attn-dropout", "0.1", "--hidden-dropout", "0.1",
                           "--dtype", "bf16", "--heads", "16", "--ffn", "1000", "--tp", "16", NULL},
           NULL, "must divide ffn (1000)");
    expect((char *const[]){TP_BIN, "--dropout", "2", NULL}, NULL, "--dropout expects a probability");
    expect((char *const[]){TP_BIN, "--preset", "small", "--sequence-parallel", "--seq", "131", "--tp", "2", NULL},
           NULL, "must divide seq (131)");
    expect((char *const[]){TP_BIN, "--input", "/nonexistent/x.safetensors", "--preset", "tiny", NULL}, NULL,
           "cannot open '/nonexistent/x.safetensors'");
}

// The schedule's flags (--no-overlap and the overlap's knobs, --keep-gathered, --fprop-chunks,
// --recompute-gelu, --recompute-layernorm, --nccl-register):
// each is taken, as the refusal that follows from the configuration shows; the combinations
// that mean nothing, and bad values, are refused with words that say which.
static void test_schedule_flags(void **state) {
    (void)state;
    expect((char *const[]){TP_BIN, "--no-overlap", "--tp", "3", NULL}, NULL, "must divide the number of heads (32)");
    expect((char *const[]){TP_BIN, "--tp", "3", "--parallel", "--no-overlap", NULL}, NULL,
           "must divide the number of heads (32)");
    expect((char *const[]){TP_BIN, "--preset", "small", "--sequence-parallel", "--keep-gathered", "--overlap-priority",
                           "normal", "--overlap-ctas", "8", "--seq", "131", "--tp", "2", NULL},
           NULL, "must divide seq (131)");
    expect((char *const[]){TP_BIN, "--overlap-priority=high", "--overlap-ctas=4", "--tp", "3", NULL}, NULL,
           "must divide the number of heads (32)");
    expect((char *const[]){TP_BIN, "--no-overlap=1", NULL}, NULL, "--no-overlap takes no value");
    expect((char *const[]){TP_BIN, "--no-overlap", "--overlap-ctas", "8", NULL}, NULL, "give one or the other");
    expect((char *const[]){TP_BIN, "--overlap-priority", "normal", "--no-overlap", NULL}, NULL, "give one or the other");
    expect((char *const[]){TP_BIN, "--overlap-priority", "low", NULL}, NULL,
           "--overlap-priority expects normal or high, got 'low'");
    expect((char *const[]){TP_BIN, "--overlap-ctas", "0", NULL}, NULL, "--overlap-ctas expects an integer in [1, 32], got '0'");
    // The registration pair contradicts itself, in either order.
    expect((char *const[]){TP_BIN, "--nccl-register", "--no-nccl-register", NULL}, NULL,
           "--nccl-register and --no-nccl-register contradict each other");
    expect((char *const[]){TP_BIN, "--no-nccl-register", "--tp", "2", "--nccl-register", NULL}, NULL,
           "--nccl-register and --no-nccl-register contradict each other");
    // --overlap-sm-margin: taken, refused with --no-overlap and --block, a bad value by name
    expect((char *const[]){TP_BIN, "--overlap-sm-margin", "16", "--tp", "3", NULL}, NULL,
           "must divide the number of heads (32)");
    expect((char *const[]){TP_BIN, "--overlap-sm-margin", "16", "--no-overlap", NULL}, NULL,
           "--overlap-sm-margin sets up the overlap that --no-overlap turns off: give one or the other");
    expect((char *const[]){TP_BIN, "--block", "exact", "--overlap-sm-margin", "8", NULL}, NULL,
           "--block overlaps no collective: drop --overlap-sm-margin");
    expect((char *const[]){TP_BIN, "--overlap-sm-margin", "16", "--deterministic", NULL}, NULL,
           "which --deterministic fixes");
    expect((char *const[]){TP_BIN, "--overlap-sm-margin", "0", "--no-overlap", "--tp", "3", NULL}, NULL,
           "must divide the number of heads (32)");  // 0: all SMs - no overlap set up
    // A flag's last value counts: a margin given again as 0 sets up nothing, another knob still does
    expect((char *const[]){TP_BIN, "--overlap-sm-margin", "16", "--overlap-sm-margin", "0", "--no-overlap", "--tp", "3", NULL},
           NULL, "must divide the number of heads (32)");
    expect((char *const[]){TP_BIN, "--block", "exact", "--overlap-sm-margin", "8", "--overlap-sm-margin", "0", "--tp", "3",
                           NULL},
           NULL, "must divide");
    expect((char *const[]){TP_BIN, "--overlap-sm-margin", "16", "--overlap-ctas", "8", "--overlap-sm-margin", "0",
                           "--no-overlap", NULL},
           NULL, "--overlap-ctas sets up the overlap that --no-overlap turns off");
    // The default margin is no refusal where it cannot apply: it falls to 0 there
    expect((char *const[]){TP_BIN, "--deterministic", "--tp", "3", NULL}, NULL, "must divide the number of heads (32)");
    expect((char *const[]){TP_BIN, "--block", "exact", "--tp", "3", NULL}, NULL, "must divide");
    // A shared flag this step has no use for is refused, not ignored
    expect((char *const[]){TP_BIN, "--breakdown", "--tp", "2", NULL}, NULL, "drop --breakdown");
    expect((char *const[]){TP_BIN, "--overlap-sm-margin", "-1", NULL}, NULL,
           "--overlap-sm-margin expects an integer in [0, 128], got '-1'");
    // --nccl-cta-policy: each word taken (alone and with --overlap-ctas), a bad word refused by
    // name, refused with --no-overlap and with --block like the overlap's other knobs
    expect((char *const[]){TP_BIN, "--nccl-cta-policy", "zero", "--tp", "3", NULL}, NULL,
           "must divide the number of heads (32)");
    expect((char *const[]){TP_BIN, "--nccl-cta-policy=efficiency", "--overlap-ctas", "8", "--tp", "3", NULL}, NULL,
           "must divide the number of heads (32)");
    expect((char *const[]){TP_BIN, "--nccl-cta-policy", "default", "--sequence-parallel", "--tp", "3", NULL}, NULL,
           "must divide the number of heads (32)");
    expect((char *const[]){TP_BIN, "--nccl-cta-policy", "fast", NULL}, NULL,
           "--nccl-cta-policy expects default, efficiency or zero, got 'fast'");
    expect((char *const[]){TP_BIN, "--nccl-cta-policy", "zero", "--no-overlap", NULL}, NULL, "give one or the other");
    expect((char *const[]){TP_BIN, "--block", "local", "--nccl-cta-policy", "zero", NULL}, NULL,
           "--block overlaps no collective: drop --nccl-cta-policy");
    expect((char *const[]){TP_BIN, "--keep-gathered", "--preset", "tiny", NULL}, NULL, "add --sequence-parallel");
    expect((char *const[]){TP_BIN, "--block", "exact", "--no-overlap", NULL}, NULL, "--block overlaps no collective");
    expect((char *const[]){TP_BIN, "--fprop-chunks", "4", "--tp", "3", NULL}, NULL, "must divide the number of heads (32)");
    expect((char *const[]){TP_BIN, "--fprop-chunks", "4", "--sequence-parallel", NULL}, NULL,
           "drop it with --sequence-parallel");
    expect((char *const[]){TP_BIN, "--fprop-chunks", "3", "--preset", "tiny", NULL}, NULL,
           "--fprop-chunks 3 must divide the 32 tokens (seq * batch)");
    expect((char *const[]){TP_BIN, "--fprop-chunks", "17", NULL}, NULL, "--fprop-chunks expects an integer in [1, 16]");
    // --recompute-gelu: taken with every variant, refused with --block (no GELU there) and with a value
    expect((char *const[]){TP_BIN, "--recompute-gelu", "--tp", "3", NULL}, NULL, "must divide the number of heads (32)");
    expect((char *const[]){TP_BIN, "--tp", "3", "--parallel", "--sequence-parallel", "--recompute-gelu", NULL}, NULL,
           "must divide the number of heads (32)");
    expect((char *const[]){TP_BIN, "--recompute-gelu", "--block", "exact", NULL}, NULL, "--block has no GELU");
    expect((char *const[]){TP_BIN, "--recompute-gelu=1", NULL}, NULL, "--recompute-gelu takes no value");
    // --recompute-layernorm: taken with every variant (plain TP too), with --recompute-gelu;
    // refused with --block, with --keep-gathered (which keeps what it recomputes), with a value
    expect((char *const[]){TP_BIN, "--recompute-layernorm", "--tp", "3", NULL}, NULL,
           "must divide the number of heads (32)");
    expect((char *const[]){TP_BIN, "--tp", "3", "--parallel", "--sequence-parallel", "--recompute-gelu",
                           "--recompute-layernorm", NULL},
           NULL, "must divide the number of heads (32)");
    expect((char *const[]){TP_BIN, "--sequence-parallel", "--recompute-layernorm", "--tp", "3", NULL}, NULL,
           "must divide the number of heads (32)");
    expect((char *const[]){TP_BIN, "--recompute-layernorm", "--block", "local", NULL}, NULL,
           "--block's LayerNorm keeps its output");
    expect((char *const[]){TP_BIN, "--sequence-parallel", "--keep-gathered", "--recompute-layernorm", NULL}, NULL,
           "--keep-gathered keeps them (gathered): drop one of them");
    // Without --sequence-parallel too: the conflict comes first, not "add --sequence-parallel",
    // which would only lead to it.
    expect((char *const[]){TP_BIN, "--keep-gathered", "--recompute-layernorm", NULL}, NULL,
           "--keep-gathered keeps them (gathered): drop one of them");
    expect((char *const[]){TP_BIN, "--recompute-layernorm=1", NULL}, NULL, "--recompute-layernorm takes no value");
    // --nccl-register: taken with --sequence-parallel (with or without the overlap, the parallel
    // layer too); refused without it (plain TP has no all-gather), with --block, with a value
    expect((char *const[]){TP_BIN, "--sequence-parallel", "--nccl-register", "--tp", "3", NULL}, NULL,
           "must divide the number of heads (32)");
    expect((char *const[]){TP_BIN, "--nccl-register", "--sequence-parallel", "--no-overlap", "--tp", "3", NULL}, NULL,
           "must divide the number of heads (32)");
    expect((char *const[]){TP_BIN, "--parallel", "--sequence-parallel", "--nccl-register", "--nccl-cta-policy",
                           "efficiency", "--tp", "3", NULL},
           NULL, "must divide the number of heads (32)");
    expect((char *const[]){TP_BIN, "--nccl-register", "--preset", "tiny", NULL}, NULL, "add --sequence-parallel");
    expect((char *const[]){TP_BIN, "--block", "local", "--nccl-register", NULL}, NULL,
           "--block has no all-gather: drop one of them");
    expect((char *const[]){TP_BIN, "--nccl-register=1", NULL}, NULL, "--nccl-register takes no value");
    // --no-nccl-register: taken (with every variant); registration by default (sequence
    // parallelism at tp 2 or more) is never refused where it does not apply: at --tp 1 the
    // run goes on to the next refusal.
    expect((char *const[]){TP_BIN, "--sequence-parallel", "--no-nccl-register", "--tp", "3", NULL}, NULL,
           "must divide the number of heads (32)");
    expect((char *const[]){TP_BIN, "--no-nccl-register", "--tp", "3", NULL}, NULL, "must divide the number of heads (32)");
    expect((char *const[]){TP_BIN, "--no-nccl-register=1", NULL}, NULL, "--no-nccl-register takes no value");
    expect((char *const[]){TP_BIN, "--sequence-parallel", "--check", "--preset", "quickstart", "--tp", "1", NULL}, NULL,
           "add --preset small");
    // At --tp 1 (one process, no collective) both NCCL knobs would do nothing: refused, by name.
    expect((char *const[]){TP_BIN, "--sequence-parallel", "--nccl-register", "--preset", "tiny", NULL}, NULL,
           "--tp 1 has none");
    expect((char *const[]){TP_BIN, "--nccl-cta-policy", "efficiency", "--tp", "1", "--preset", "tiny", NULL}, NULL,
           "--tp 1 has none");
}

// More ranks than GPUs: one clear message naming both numbers from the launcher, before any
// rank starts (no rank reports a failure, none is left waiting). On any machine: twice as
// many ranks as it has GPUs (or 2 where there are none).
static void test_more_ranks_than_gpus(void **state) {
    (void)state;
    int gpus = gpu_count();
    char tp[16], out[8192], want[160];
    snprintf(tp, sizeof tp, "%d", gpus > 0 ? 2 * gpus : 2);
    int code = run((char *const[]){TP_BIN, "--tp", tp, "--preset", "quickstart", "--timeout", "20", NULL}, NULL, out,
                   sizeof out);
    print_message("  $ step07_tensor_parallel --tp %s (this machine: %d GPUs) -> exit %d: %s", tp, gpus, code, out);
    assert_int_equal(code, 1);
    if (gpus > 0) snprintf(want, sizeof want, "--tp %s needs %s GPUs, one per rank, but this machine has %d", tp, tp, gpus);
    else snprintf(want, sizeof want, "--tp 2: this machine has no usable GPU");
    if (!strstr(out, want)) fail_msg("expected '%s' in:\n%s", want, out);
    assert_null(strstr(out, "rank 0"));  // said before any rank started: no rank's lines
    assert_null(strstr(out, "rank 1"));
    // A bad file is said as such before the GPUs are counted (here too many ranks for them).
    expect((char *const[]){TP_BIN, "--tp", tp, "--preset", "tiny", "--weights", "/nonexistent/w.safetensors", NULL},
           NULL, "cannot open '/nonexistent/w.safetensors'");
}

int main(int argc, char **argv) {
    (void)argc;
    if (access(TP_BIN, X_OK) != 0) {  // not in Bazel's runfiles: beside this test
        snprintf(TP_BIN, sizeof TP_BIN, "%s", argv[0]);
        char *slash = strrchr(TP_BIN, '/');
        snprintf(slash ? slash + 1 : TP_BIN, sizeof TP_BIN - (size_t)(slash ? slash + 1 - TP_BIN : 0),
                 "step07_tensor_parallel");
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tp_not_dividing_heads),
        cmocka_unit_test(test_tp_from_environment_not_dividing_heads),
        cmocka_unit_test(test_bad_flags),
        cmocka_unit_test(test_shared_flags),
        cmocka_unit_test(test_schedule_flags),
        cmocka_unit_test(test_more_ranks_than_gpus),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
