#include "common/core/flags.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/errors.h"

// strtoll and strtod skip leading white space and accept a '+': a flag's value is refused
// unless it starts like a number does here.
static int starts_like_a_number(const char *text) {
    const char *t = text[0] == '-' ? text + 1 : text;
    return (t[0] >= '0' && t[0] <= '9') || (t[0] == '.' && t[1] >= '0' && t[1] <= '9');
}

int64_t parse_int_flag(const char *flag, const char *text, int64_t lo, int64_t hi) {
    char *end = NULL;
    errno = 0;
    long long x = starts_like_a_number(text) ? strtoll(text, &end, 10) : 0;
    if (!end || end == text || *end || errno == ERANGE || x < lo || x > hi)
        fail_user("%s expects an integer in [%lld, %lld], got '%s'", flag, (long long)lo, (long long)hi, text);
    return (int64_t)x;
}

static int in_range(double x, double lo, double hi, RangeEnds ends) {
    int above_lo = (ends == RANGE_OPEN_BELOW || ends == RANGE_OPEN) ? x > lo : x >= lo;
    int below_hi = (ends == RANGE_OPEN_ABOVE || ends == RANGE_OPEN) ? x < hi : x <= hi;
    return above_lo && below_hi;
}

// Strict as above; 0 and the value in *x if the text is a finite number, else 1.
static int parse_finite(const char *text, double *x) {
    char *end = NULL;
    errno = 0;
    *x = starts_like_a_number(text) ? strtod(text, &end) : 0.0;
    return !end || end == text || *end || errno == ERANGE || !isfinite(*x);
}

double parse_probability_flag(const char *flag, const char *text) {
    double x;
    if (parse_finite(text, &x) || !(x >= 0.0 && x < 1.0))
        fail_user("%s expects a probability in [0, 1), got '%s'", flag, text);
    return x;
}

double parse_float_flag(const char *flag, const char *text, double lo, double hi, RangeEnds ends) {
    double x;
    if (parse_finite(text, &x) || !in_range(x, lo, hi, ends)) {
        const char open = (ends == RANGE_OPEN_BELOW || ends == RANGE_OPEN) ? '(' : '[';
        const char close = (ends == RANGE_OPEN_ABOVE || ends == RANGE_OPEN) ? ')' : ']';
        fail_user("%s expects a number in %c%g, %g%c, got '%s'", flag, open, lo, hi, close, text);
    }
    return x;
}

int parse_choice_flag(const char *flag, const char *text, const char *const *choices, int n) {
    for (int i = 0; i < n; i++)
        if (!strcmp(text, choices[i])) return i;
    char list[256] = "";
    size_t used = 0;
    for (int i = 0; i < n && used < sizeof list; i++)
        used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", i == 0 ? "" : i + 1 == n ? " or " : ", ",
                                 choices[i]);
    fail_user("%s expects %s, got '%s'", flag, list, text);
}

int flag_is_one_of(const char *name, const char *const *names, int n) {
    for (int i = 0; i < n; i++)
        if (!strcmp(name, names[i])) return 1;
    return 0;
}

int help_lists_flag(const char *help, const char *name) {
    if (!help) return 0;
    size_t len = strlen(name);
    for (const char *p = strstr(help, name); p; p = strstr(p + 1, name)) {
        int starts_word = p == help || p[-1] == ' ' || p[-1] == '\n' || p[-1] == '[';
        char after = p[len];
        int ends_word = after == ' ' || after == '=' || after == ',' || after == '\n' || after == ']' || after == 0;
        if (starts_word && ends_word) return 1;
    }
    return 0;
}

int flags_split(int argc, char **argv, FlagKindFn kind, void *ctx, FlagArg *out) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return -1;
    int n = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0 || arg[2] == 0 || arg[2] == '=')
            fail_user("unexpected argument '%s': flags start with -- (see --help)", arg);
        // "--name=value": the name is what comes before the first '='.
        const char *eq = strchr(arg, '=');
        size_t name_len = eq ? (size_t)(eq - arg) : strlen(arg);
        if (name_len >= FLAG_NAME_MAX) fail_user("unknown flag '%.*s' (see --help)", (int)name_len, arg);
        FlagArg *f = &out[n++];
        memcpy(f->name, arg, name_len);
        f->name[name_len] = 0;
        f->value = eq ? eq + 1 : NULL;

        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        int next_is_value = next && strncmp(next, "--", 2) != 0;
        switch (kind(f->name, ctx)) {
            case FLAG_SWITCH:
                if (eq) fail_user("%s takes no value (got '%s')", f->name, arg);
                break;
            case FLAG_VALUE:
                if (!eq && !next_is_value) fail_user("%s needs a value (see --help)", f->name);
                if (!eq) f->value = argv[++i];
                break;
            case FLAG_VALUE_OR_UNKNOWN:
                if (!eq && !next_is_value) fail_user("unknown flag '%s' (see --help)", f->name);
                if (!eq) f->value = argv[++i];
                break;
            default:
                fail_user("unknown flag '%s' (see --help)", f->name);
        }
    }
    return n;
}

static FlagKind no_flags(const char *name, void *ctx) {
    (void)name, (void)ctx;
    return FLAG_UNKNOWN;
}

void flags_require_none(int argc, char **argv, const char *usage) {
    FlagArg unused[1];
    if (argc > 1 && flags_split(argc, argv, no_flags, NULL, unused) < 0) {
        fputs(usage, stdout);
        exit(0);
    }
}
