// The command line, strictly: one parser for every binary (the steps' driver, compare, the
// FP8 training demo, the benchmarks), so that every flag means what it says.
//
// Values. The whole text must be the number and the number must be in range, or the program
// stops with a message that names the flag, what it expects and what it got:
//   parse_int_flag("--amax-history", "16abc", 1, 1024)
//     -> error: --amax-history expects an integer in [1, 1024], got '16abc'
// So "16abc", "30x", "1.5" where an integer is wanted, "4294967312" where at most 2^31 - 1
// is, "", " 4", "nan" and "inf" are all refused (never silently cut, wrapped or rounded).
//
// Flags. "--name value" and "--name=value" mean the same. A switch ("--check") takes no
// value, and "--check=1" is refused. flags_split() turns argv into (name, value) pairs and
// refuses, with words that say which: an argument that is not a flag, an unknown flag
// (also when it is the last argument), a switch given a value, a flag without its value.
// What each flag then means is the caller's business (see steps/driver/options.c).
//
// Every refusal is fail_user (common/core/errors.h): "error: ..." on stderr and exit status 1.
#ifndef COMMON_CORE_FLAGS_H
#define COMMON_CORE_FLAGS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// An integer in [lo, hi], in decimal, optionally with a leading '-'.
int64_t parse_int_flag(const char *flag, const char *text, int64_t lo, int64_t hi);

// Which ends of [lo, hi] a float flag may take.
typedef enum {
    RANGE_CLOSED,      // [lo, hi]
    RANGE_OPEN_ABOVE,  // [lo, hi)   e.g. a probability that may be 0 but not 1
    RANGE_OPEN_BELOW,  // (lo, hi]
    RANGE_OPEN,        // (lo, hi)
} RangeEnds;

// A finite decimal number ("0.1", "1e-3") within the range.
double parse_float_flag(const char *flag, const char *text, double lo, double hi, RangeEnds ends);

// A probability in [0, 1): parse_float_flag's rule, and the message says "a probability".
double parse_probability_flag(const char *flag, const char *text);

// One of a list of words ("fp16", "bf16"): returns its index in choices[0..n).
int parse_choice_flag(const char *flag, const char *text, const char *const *choices, int n);

// ---- splitting argv ----------------------------------------------------------------------
enum { FLAG_NAME_MAX = 64 };

typedef struct {
    char name[FLAG_NAME_MAX];  // "--seq", also for "--seq=4"
    const char *value;         // "4" (points into argv), or NULL for a switch
} FlagArg;

// What a name is to the program. FLAG_VALUE_OR_UNKNOWN is for names the splitter cannot
// place: with a value after them they are passed on (the caller refuses them if nothing
// takes them); as the last argument they are reported unknown. (The steps' driver uses it
// for a step's own flags that its --help does not list.)
typedef enum { FLAG_UNKNOWN, FLAG_SWITCH, FLAG_VALUE, FLAG_VALUE_OR_UNKNOWN } FlagKind;
typedef FlagKind (*FlagKindFn)(const char *name, void *ctx);

// Splits argv[1..argc) into out[0..n) (out has room for argc entries) and returns n, or -1
// when "--help" or "-h" is anywhere (the caller prints its help and exits 0). The value of a
// "--name value" pair is the next argument unless that starts with "--" (then the value is
// missing: "--seq --batch 4" says "--seq needs a value").
int flags_split(int argc, char **argv, FlagKindFn kind, void *ctx, FlagArg *out);

// For a program that takes no flags: prints `usage` and exits 0 on --help, refuses anything
// else given.
void flags_require_none(int argc, char **argv, const char *usage);

// 1 if `name` is one of names[0..n).
int flag_is_one_of(const char *name, const char *const *names, int n);

// 1 if a help text lists `name` as a flag: "--name" followed by a space, '=', ',' or the end
// of a line ("--fp8" in "  --fp8-format ..." does not count).
int help_lists_flag(const char *help, const char *name);

#ifdef __cplusplus
}
#endif

#endif  // COMMON_CORE_FLAGS_H
