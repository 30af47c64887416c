// The shared command-line parser, in process: common/core/flags (strict values, splitting
// argv) and steps/driver/options.c (what the shared flags mean, the preset rule). Refusals end
// the program (fail_user, exit 1), so each is run in a child process and its message checked.
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/core/flags.h"
#include "steps/driver/step.h"
#include "tests/test_util.h"

// ---- running a parse ---------------------------------------------------------------------
enum { MAX_ARGS = 16 };

// argv from a NULL-terminated list, the program name first (argv strings must be writable).
static int make_argv(char *argv[MAX_ARGS], const char *const *args) {
    int argc = 0;
    argv[argc++] = strdup("prog");
    for (; *args && argc < MAX_ARGS - 1; args++) argv[argc++] = strdup(*args);
    argv[argc] = NULL;
    return argc;
}

// A step with one switch (--fast), one flag listed in its help (--level N) and one that is
// not (--hidden-extra N), as a step written before the help rule might have.
static int fast, level, extra;

static int fake_parse_flag(const char *flag, const char *value) {
    if (!value) {
        if (strcmp(flag, "--fast") != 0) return 0;
        fast = 1;
        return 1;
    }
    if (!strcmp(flag, "--level")) level = (int)parse_int_flag(flag, value, 0, 9);
    else if (!strcmp(flag, "--hidden-extra")) extra = (int)parse_int_flag(flag, value, 0, 9);
    else return 0;
    return 1;
}

static const StepOps FAKE = {
    .id = "00_fake",
    .title = "a step for the parser's tests",
    .whats_new = "nothing",
    .parse_flag = fake_parse_flag,
    .flags_help = "  --fast               go fast\n  --level N            how much\n",
};

static Options parse(const char *const *args) {
    char *argv[MAX_ARGS];
    int argc = make_argv(argv, args);
    Options o;
    options_defaults(&o);
    fast = level = extra = 0;
    options_parse(argc, argv, &o, &FAKE);
    return o;
}

#define PARSE(...) parse((const char *const[]){__VA_ARGS__, NULL})

static char tmpdir[256];

// Runs parse(args) in a child; expects exit status `code` and `message` in its output.
static void expect_exit(int code, const char *message, const char *const *args) {
    char out_path[300];
    snprintf(out_path, sizeof out_path, "%s/out.txt", tmpdir);
    fflush(stdout);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1), dup2(fd, 2);
        parse(args);
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    char msg[8192] = "";
    FILE *f = fopen(out_path, "r");
    size_t len = fread(msg, 1, sizeof msg - 1, f);
    msg[len] = 0;
    fclose(f);
    const int got = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    print_message("  %s -> exit %d: %.300s", args[0] ? args[0] : "(none)", got, msg);
    if (got != code || !strstr(msg, message))
        fail_msg("expected exit %d and \"%s\"; got exit %d and: %s", code, message, got, msg);
}

#define EXPECT_EXIT(code, message, ...) expect_exit(code, message, (const char *const[]){__VA_ARGS__, NULL})

// ---- strict values ------------------------------------------------------------------------
static void run_int(const char *text) { parse_int_flag("--n", text, 1, 1 << 30); }
static void run_float(const char *text) { parse_float_flag("--x", text, 0.0, 100.0, RANGE_OPEN); }

static void expect_refused(void (*run)(const char *), const char *text, const char *message) {
    char out_path[300];
    snprintf(out_path, sizeof out_path, "%s/value.txt", tmpdir);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 2);
        run(text);
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    char msg[1024] = "";
    FILE *f = fopen(out_path, "r");
    size_t len = fread(msg, 1, sizeof msg - 1, f);
    msg[len] = 0;
    fclose(f);
    print_message("  '%s' -> %s", text, msg);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 1 || !strstr(msg, message))
        fail_msg("'%s' was not refused with \"%s\": %s", text, message, msg);
}

static void test_strict_integers(void **state) {
    (void)state;
    assert_int_equal(parse_int_flag("--n", "16", 1, 1024), 16);
    assert_int_equal(parse_int_flag("--n", "-3", -5, 5), -3);
    const char *bad[] = {"16abc", "4294967312", "1.5", "30x", "", " 4", "+4", "0x10", "99999999999999999999", "-", "1e3"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_refused(run_int, bad[i], "--n expects an integer in [1, 1073741824]");
}

static void test_strict_floats(void **state) {
    (void)state;
    assert_true(parse_float_flag("--x", "1.5", 0, 100, RANGE_OPEN) == 1.5);
    assert_true(parse_float_flag("--x", "1e-3", 0, 100, RANGE_OPEN) == 1e-3);
    assert_true(parse_float_flag("--p", "0", 0, 1, RANGE_OPEN_ABOVE) == 0.0);
    const char *bad[] = {"1.5xyz", "nan", "inf", "-inf", "", "1e400", "100", "0", " 2", "2 "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_refused(run_float, bad[i], "--x expects a number in (0, 100)");
}

static void test_help_lists_flag(void **state) {
    (void)state;
    const char *help = "  --fp8-format hybrid|e4m3   x\n  --fp8                y\n  --margin N\n";
    assert_true(help_lists_flag(help, "--fp8"));
    assert_true(help_lists_flag(help, "--fp8-format"));
    assert_true(help_lists_flag(help, "--margin"));
    assert_false(help_lists_flag(help, "--fp8-form"));
    assert_false(help_lists_flag(help, "--amax"));
    assert_false(help_lists_flag(NULL, "--x"));
}

// ---- the preset rule ----------------------------------------------------------------------
// Before: a later --preset silently reset every flag given before it.
static void test_preset_applies_first(void **state) {
    (void)state;
    Options o = PARSE("--dtype", "bf16", "--dropout", "0", "--causal", "--preset", "tiny");
    assert_int_equal(o.layer.hidden, 128);
    assert_int_equal(o.layer.dtype, DTYPE_BF16);
    assert_true(o.layer.attn_dropout == 0.0f && o.layer.hidden_dropout == 0.0f);
    assert_int_equal(o.layer.causal, 1);
    o = PARSE("--seed", "7", "--hidden", "256", "--heads", "4", "--preset", "tiny");
    assert_int_equal(o.layer.hidden, 256);
    assert_int_equal(o.layer.heads, 4);
    assert_int_equal(o.layer.seed, 7);
    // The same flags after the preset: the same result.
    o = PARSE("--preset", "tiny", "--dtype", "bf16", "--dropout", "0", "--causal");
    assert_int_equal(o.layer.dtype, DTYPE_BF16);
    assert_int_equal(o.layer.causal, 1);
}

static void test_preset_then_invalid_sizes(void **state) {
    (void)state;
    // Before: the preset undid --hidden 12 --heads 3, and the configuration passed.
    EXPECT_EXIT(1, "hidden (12) and ffn (512) must be multiples of 8", "--hidden", "12", "--heads", "3", "--preset",
                "tiny");
    EXPECT_EXIT(1, "--preset given twice", "--preset", "tiny", "--preset", "small");
    EXPECT_EXIT(1, "unknown preset 'huge'", "--preset", "huge");
}

static void test_check_starts_from_small(void **state) {
    (void)state;
    Options o = PARSE("--dtype", "bf16", "--check");
    assert_int_equal(o.layer.hidden, 256);  // the small preset
    assert_int_equal(o.layer.dtype, DTYPE_BF16);
    assert_false(o.check_config_given);
    o = PARSE("--check", "--preset", "tiny");
    assert_int_equal(o.layer.hidden, 128);
    o = PARSE("--check", "--seq", "64");  // a size given: from the quickstart, as before
    assert_int_equal(o.layer.hidden, 4096);
    assert_int_equal(o.layer.seq, 64);
    assert_true(o.check_config_given);
}

// ---- flag syntax --------------------------------------------------------------------------
static void test_flag_equals_value(void **state) {
    (void)state;
    Options o = PARSE("--preset=tiny", "--seq=4", "--dtype=bf16", "--save=/tmp/x.safetensors", "--level=3");
    assert_int_equal(o.layer.seq, 4);
    assert_int_equal(o.layer.dtype, DTYPE_BF16);
    assert_string_equal(o.save_path, "/tmp/x.safetensors");
    assert_int_equal(level, 3);
    EXPECT_EXIT(1, "--check takes no value", "--check=1");
    EXPECT_EXIT(1, "--fast takes no value", "--fast=yes");
    EXPECT_EXIT(1, "--seq expects an integer", "--seq=");
}

static void test_unknown_and_missing(void **state) {
    (void)state;
    // Before: an unknown flag given last was reported as "needs a value".
    EXPECT_EXIT(1, "unknown flag '--bogus'", "--preset", "tiny", "--bogus");
    EXPECT_EXIT(1, "unknown flag '--bogus'", "--bogus", "1");
    EXPECT_EXIT(1, "unknown flag '--bogus'", "--bogus", "--check");
    EXPECT_EXIT(1, "--seq needs a value", "--seq");
    EXPECT_EXIT(1, "--seq needs a value", "--seq", "--batch", "4");
    EXPECT_EXIT(1, "--level needs a value", "--level");  // a step's flag, listed in its help
    EXPECT_EXIT(1, "unexpected argument 'tiny'", "tiny");
    EXPECT_EXIT(0, "Flags of this step", "--bogus", "--help");
    // A step's flag that its help does not list still works with a value.
    PARSE("--hidden-extra", "2");
    assert_int_equal(extra, 2);
    Options o = PARSE("--fast", "--preset", "tiny");
    assert_int_equal(fast, 1);
    assert_int_equal(o.layer.hidden, 128);
}

static void test_values_in_range(void **state) {
    (void)state;
    EXPECT_EXIT(1, "--seq expects an integer in [1, 1048576], got '16abc'", "--seq", "16abc");
    EXPECT_EXIT(1, "--batch expects an integer", "--batch", "4294967297");
    EXPECT_EXIT(1, "--iters expects an integer", "--iters", "1.5");
    EXPECT_EXIT(1, "--dropout expects a probability in [0, 1)", "--dropout", "0.1x");
    EXPECT_EXIT(1, "--level expects an integer in [0, 9], got '30x'", "--level", "30x");
    EXPECT_EXIT(1, "--dtype expects fp16 or bf16, got 'fp64'", "--dtype", "fp64");
}

// Dropout runs at a multiple of 1/256: one that this changes by more than 5% is refused.
static void test_dropout_representable(void **state) {
    (void)state;
    EXPECT_EXIT(1, "0/256 = 0, changes the drop probability by 100%", "--dropout", "0.001");
    EXPECT_EXIT(1, "255/256 = 0.9961, changes the keep probability by 291%", "--dropout", "0.999");
    EXPECT_EXIT(1, "e.g. 2/256", "--attn-dropout", "0.01");
    Options o = PARSE("--dropout", "0.1");  // 26/256: 1.6% more drops, accepted
    assert_true(o.layer.attn_dropout == 0.1f);
    o = PARSE("--hidden-dropout", "0.0234375");  // 6/256 exactly
    assert_true(o.layer.hidden_dropout == 0.0234375f);
}

static void test_sizes(void **state) {
    (void)state;
    EXPECT_EXIT(1, "1048576 * 65536 = 68719476736 tokens", "--seq", "1048576", "--batch", "65536");
}

static void test_outputs_checked_now(void **state) {
    (void)state;
    EXPECT_EXIT(1, "--save /nonexistent/dir/out.safetensors: cannot write there", "--save",
                "/nonexistent/dir/out.safetensors");
    EXPECT_EXIT(1, "--json /nonexistent/r.json: cannot write there", "--json", "/nonexistent/r.json");
    EXPECT_EXIT(1, "that is a folder", "--json", tmpdir);
    char path[400];
    snprintf(path, sizeof path, "%s/r.json", tmpdir);
    Options o = PARSE("--json", path);
    assert_string_equal(o.json_path, path);
    assert_int_equal(access(path, F_OK), -1);  // checked, not left behind
}

// --deterministic reaches LayerConfig.deterministic whatever comes after it: --preset and
// --check's small configuration both set the layer's configuration.
static void test_deterministic_flag(void **state) {
    (void)state;
    assert_int_equal(PARSE("--preset", "small").layer.deterministic, 0);
    const Options a = PARSE("--deterministic", "--preset", "small");
    assert_int_equal(a.layer.deterministic, 1);
    assert_int_equal(a.layer.seq, 128);
    assert_int_equal(PARSE("--preset", "tiny", "--deterministic").layer.deterministic, 1);
    const Options c = PARSE("--deterministic", "--check");  // --check starts from small
    assert_int_equal(c.layer.deterministic, 1);
    assert_int_equal(c.layer.hidden, 256);
}

int main(void) {
    const char *t = getenv("TEST_TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/options_XXXXXX", t ? t : "/tmp");
    if (!mkdtemp(tmpdir)) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deterministic_flag),
        cmocka_unit_test(test_strict_integers),     cmocka_unit_test(test_strict_floats),
        cmocka_unit_test(test_help_lists_flag),     cmocka_unit_test(test_preset_applies_first),
        cmocka_unit_test(test_preset_then_invalid_sizes), cmocka_unit_test(test_check_starts_from_small),
        cmocka_unit_test(test_flag_equals_value),   cmocka_unit_test(test_unknown_and_missing),
        cmocka_unit_test(test_values_in_range),     cmocka_unit_test(test_dropout_representable),
        cmocka_unit_test(test_sizes),               cmocka_unit_test(test_outputs_checked_now),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
