// A switch read from an environment variable once, for the attention kernels' A/B settings
// (attention.h's ATTENTION_* variables, attention_fp8.h's ATTENTION_FP8_*): each names its
// variable, the spellings it takes and the value each stands for, and a default for when the
// variable is unset or empty. The first use or setter reads it (a setter too, so that it can
// return the value in force before it); anything else than its spellings stops the program
// (fail_user, exit 1) naming the variable, what it takes and what it got. C++ (the .cu files);
// not thread-safe: set and read from one host thread.
#ifndef KERNELS_ATTENTION_ENV_SWITCH_H
#define KERNELS_ATTENTION_ENV_SWITCH_H

#include <stdlib.h>
#include <string.h>

#include "common/core/errors.h"

// One of a switch's spellings and the value it stands for.
struct EnvChoice {
    const char *spelling;
    int value;
};

// The value of the environment variable `name` among its `n` choices; `unset` when it is unset
// or empty. Anything else stops the program, naming the variable, its choices and what it got.
static inline int env_choice(const char *name, const EnvChoice *choices, int n, int unset) {
    const char *v = getenv(name);
    if (!v || !*v) return unset;
    char spellings[160] = "";
    for (int i = 0; i < n; i++) {
        if (strcmp(v, choices[i].spelling) == 0) return choices[i].value;
        const char *sep = i == 0 ? "" : i == n - 1 ? " or " : ", ";
        strncat(spellings, sep, sizeof spellings - strlen(spellings) - 1);
        strncat(spellings, choices[i].spelling, sizeof spellings - strlen(spellings) - 1);
    }
    fail_user("%s must be %s (or unset), not \"%s\"", name, spellings, v);
}

// A switch: its environment variable read once, at the first use or setter call (a setter
// then replaces the value). `value` holds the default until then.
struct Switch {
    const char *name;  // the environment variable
    const EnvChoice *choices;
    int count;
    int value;
    bool known;
};
#define SWITCH(name, choices, default_value) {name, choices, (int)(sizeof choices / sizeof choices[0]), default_value, false}

static inline int switch_value(Switch &s) {
    if (!s.known) s.value = env_choice(s.name, s.choices, s.count, s.value), s.known = true;
    return s.value;
}

// The setters' common part: the switch takes `value` from now on; returns the previous value.
static inline int switch_set(Switch &s, int value) {
    const int previous = switch_value(s);
    s.value = value;
    return previous;
}

#endif  // KERNELS_ATTENTION_ENV_SWITCH_H
