// libFuzzer harness for the shared command-line parser (steps/driver/options.c on
// common/core/flags.c): the input is argv, its arguments separated by NUL bytes. Every
// outcome but a crash, a sanitizer report or a hang is fine: most inputs are refused.
//
// No file is ever written: fopen is wrapped (fuzz_support.c) and, here, refuses every path,
// so the --save/--json checks take their "cannot write there" branch.
#include <stdio.h>
#include <string.h>

#include "common/core/flags.h"
#include "steps/driver/step.h"
#include "tests/fuzz/fuzz_support.h"

// A step with a switch, a flag its help lists and one it does not, as real steps have.
static int fake_parse_flag(const char *flag, const char *value) {
    if (!value) return !strcmp(flag, "--fast");
    if (!strcmp(flag, "--level")) return parse_int_flag(flag, value, 0, 9) >= 0;
    if (!strcmp(flag, "--rate")) return parse_float_flag(flag, value, 0.0, 1.0, RANGE_OPEN) >= 0.0;
    return 0;
}

static const StepOps FAKE = {
    .id = "00_fuzz",
    .title = "fuzzing",
    .whats_new = "",
    .parse_flag = fake_parse_flag,
    .flags_help = "  --fast\n  --level N\n",
};

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    fuzz_refuse_files = 1;
    if (!freopen("/dev/null", "w", stdout)) return 0;  // --help's text
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    enum { MAX_ARGS = 300 };  // a little over options_parse's limit, to reach it
    static char text[1 << 16];
    if (size >= sizeof text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    char *argv[MAX_ARGS + 2] = {"prog"};
    int argc = 1;
    for (char *p = text; p <= text + size && argc <= MAX_ARGS; p += strlen(p) + 1) argv[argc++] = p;
    argv[argc] = NULL;
    Options o;
    options_defaults(&o);
    fuzz_begin();
    if (!setjmp(fuzz_exit_jump)) options_parse(argc, argv, &o, &FAKE);
    fuzz_end();
    return 0;
}
