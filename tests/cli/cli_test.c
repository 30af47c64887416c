// Bad input on the command line must give a clear message and a non-zero exit, never a
// crash: runs the real binaries (Bazel puts them in the test's runfiles) and checks
// their exit status and what they print.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/test_util.h"

typedef struct {
    int exit_code;   // -1: killed by a signal
    char output[8192];
} RunResult;

// Runs argv (NULL-terminated), capturing stdout and stderr together.
static RunResult run(char *const argv[]) {
    RunResult r = {0};
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(pipefd[1], 1);
        dup2(pipefd[1], 2);
        close(pipefd[0]);
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

static void expect(char *const argv[], int exit_code, const char *message) {
    RunResult r = run(argv);
    print_message("  $ %s %s ...  -> exit %d\n", argv[0], argv[1] ? argv[1] : "", r.exit_code);
    if (r.exit_code != exit_code || !strstr(r.output, message)) {
        fail_msg("expected exit %d and '%s'; got exit %d and:\n%s", exit_code, message, r.exit_code,
                 r.output);
    }
}

// The comparison binary: in Bazel's runfiles, or beside this test (the GPU machine's flat
// folder of packed binaries).
static char COMPARE[4096] = "steps/compare";

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

int main(int argc, char **argv) {
    (void)argc;
    if (access(COMPARE, X_OK) != 0) {
        snprintf(COMPARE, sizeof COMPARE, "%s", argv[0]);
        char *slash = strrchr(COMPARE, '/');
        snprintf(slash ? slash + 1 : COMPARE, sizeof COMPARE - (size_t)(slash ? slash + 1 - COMPARE : 0), "compare");
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unknown_flag),
        cmocka_unit_test(test_hidden_not_divisible_by_heads),
        cmocka_unit_test(test_bad_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
