// Step 07's watchdog on the CPU (steps/07_tensor_parallel/tp_comm.h): a region's deadline ends
// the rank with a message naming the region; an NCCL call's arm inside the region takes over
// and, disarmed, hands the region's deadline back (the region's name again); a region that
// ends in time ends nothing. Each case runs in a child process, as a rank would (the watchdog
// ends the process with _exit), with no communicator (nothing to abort).
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "steps/07_tensor_parallel/tp_comm.h"
#include "tests/test_util.h"

static void sleep_s(double s) {
    struct timespec t = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&t, NULL);
}

// Runs body in a child with stderr into a pipe; returns the child's exit status (-1 if it did
// not exit normally), stderr in `err`.
static int in_child(void (*body)(void), char *err, size_t size) {
    int fd[2];
    assert_int_equal(pipe(fd), 0);
    fflush(stdout), fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fd[0]);
        dup2(fd[1], 2);
        body();
        _exit(0);
    }
    close(fd[1]);
    size_t used = 0;
    ssize_t got;
    while (used < size - 1 && (got = read(fd[0], err + used, size - 1 - used)) > 0) used += (size_t)got;
    err[used] = 0;
    close(fd[0]);
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static TpComm comm_with_timeout(double s) { return (TpComm){.comm = NULL, .rank = 3, .world = 4, .timeout_s = s}; }

static void region_overrun(void) {  // a region that lasts longer than its deadline
    TpComm c = comm_with_timeout(0.2);
    tp_watchdog_begin_region(&c, "enqueuing a test step");
    sleep_s(3.0);
    tp_watchdog_end_region();
}

static void arm_inside_region(void) {  // an NCCL call's arm, done in time; then the region overruns
    TpComm c = comm_with_timeout(0.4);
    tp_watchdog_begin_region(&c, "enqueuing a test step");
    tp_watchdog_arm(&c, "an NCCL call");
    sleep_s(0.1);
    tp_watchdog_disarm();
    sleep_s(3.0);
    tp_watchdog_end_region();
}

static void region_in_time(void) {  // ended before its deadline: nothing happens after
    TpComm c = comm_with_timeout(0.2);
    tp_watchdog_begin_region(&c, "enqueuing a test step");
    sleep_s(0.05);
    tp_watchdog_end_region();
    sleep_s(0.6);
}

static void expect_end(void (*body)(void), const char *want) {
    char err[2048];
    int code = in_child(body, err, sizeof err);
    print_message("  exit %d: %s", code, err[0] ? err : "(nothing on stderr)\n");
    assert_int_equal(code, 1);
    if (!strstr(err, want)) fail_msg("expected '%s' in: %s", want, err);
}

static void test_region_deadline(void **state) {
    (void)state;
    expect_end(region_overrun, "rank 3: timed out after 0 s in enqueuing a test step");
}

static void test_arm_hands_the_region_back(void **state) {
    (void)state;
    expect_end(arm_inside_region, "rank 3: timed out after 0 s in enqueuing a test step");
}

static void test_region_ended_in_time(void **state) {
    (void)state;
    char err[2048];
    int code = in_child(region_in_time, err, sizeof err);
    print_message("  exit %d: %s", code, err[0] ? err : "(nothing on stderr)\n");
    assert_int_equal(code, 0);
    assert_null(strstr(err, "timed out"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_region_deadline),
        cmocka_unit_test(test_arm_hands_the_region_back),
        cmocka_unit_test(test_region_ended_in_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
