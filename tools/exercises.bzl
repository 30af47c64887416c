"""Graded exercises: code that is the reference solution normally, and a stub (or a solution with
a planted bug) when a `--define` asks for it.

    exercise_library(name = "layernorm_backward_impl", exercise = "layernorm_backward",
                     solution = "layernorm_backward.c", stub = "//exercises:layernorm_backward.c",
                     bugs = ["//tools/solutions:bugs/layernorm_backward.no_clear.sed"], ...)

is a cc_library built from one of these sources:

    --define=EXERCISES=1                     every exercise's stub (`--config=exercises`)
    --define=EXERCISES=layernorm_backward    this exercise's stub, every other one's solution
                                             (tools/grade.sh grades each exercise this way, so
                                             that one that does not build costs only its own points)
    --define=EXERCISES=layernorm_backward.no_clear   the solution with the planted bug
                                             bugs/layernorm_backward.no_clear.sed (tools/grade.sh --bugs)
    (nothing)                                the solution

Learner code (stubs, planted bugs) compiles with warnings that are not errors: an unused
variable in a half-written exercise must not stop the grader. Solutions keep -Werror. Under
--define=GRADE_STRICT=1 (tools/grade.sh --strict) learner code gets -Werror too.

gpu_exercise() does the same for a CUDA (.cu) or cuBLASLt host (.c) exercise, plus a copy of
the solution with its launchers renamed ex_NAME -> solution_NAME, which the graded test times
next to the learner's code.

Graded tests carry the tags "graded" and "exercise=<exercise>"; tools/grade.sh runs them.
"""

load("//tools/cuda:cuda.bzl", "cuda_library")

# Warnings are errors in learner code too (tools/grade.sh --strict).
_STRICT = "//tools:grade_strict"

# After the learner's -Wno-error, so that it wins under --strict.
_STRICT_COPTS = select({
    _STRICT: ["-Werror"],
    "//conditions:default": [],
})

def _basename(label):
    return label.split(":")[-1].split("/")[-1]

def _variants(exercise, solution, stub, bugs):
    """Declares the config_settings and planted-bug sources of one exercise.

    Returns a list of (config_setting label or None for the default, source label, is_learner_code).
    """
    stub_setting = exercise + "__as_stub"
    native.config_setting(name = stub_setting, define_values = {"EXERCISES": exercise})
    out = [
        ("//tools:exercises_mode", stub, True),
        (":" + stub_setting, stub, True),
    ]
    ext = "." + solution.split(".")[-1]
    for bug in bugs:
        slug = _basename(bug)[:-len(".sed")]  # "<exercise>.<what the bug is>"
        if not slug.startswith(exercise + "."):
            fail("planted bug %s must be named %s.<bug>.sed" % (bug, exercise))
        setting = slug.replace(".", "__")
        native.config_setting(name = setting, define_values = {"EXERCISES": slug})
        native.genrule(
            name = setting + "_src",
            srcs = [solution, bug],
            outs = [slug + ext],
            # A planted bug that no longer applies (the solution changed) must not pass unseen.
            cmd = ("sed -f $(location %s) $(location %s) > $@ && if cmp -s $(location %s) $@; then " +
                   "echo 'planted bug %s no longer changes %s' >&2; exit 1; fi") %
                  (bug, solution, solution, bug, solution),
        )
        out.append((":" + setting, ":" + slug + ext, True))
    out.append((None, solution, False))
    return out

def _select_srcs(variants):
    d = {}
    for setting, src, _ in variants:
        d[setting or "//conditions:default"] = [src]
    return select(d)

def _select_learner_copts(variants):
    d = {}
    for setting, _, learner in variants:
        d[setting or "//conditions:default"] = ["-Wno-error"] if learner else []
    return select(d)

def exercise_library(name, exercise, solution, stub, bugs = [], srcs = [], copts = [], **kwargs):
    """A cc_library whose exercise source is the solution, the stub or a planted bug."""
    v = _variants(exercise, solution, stub, bugs)
    native.cc_library(
        name = name,
        srcs = _select_srcs(v) + srcs,
        copts = copts + _select_learner_copts(v) + _STRICT_COPTS,
        **kwargs
    )

def gpu_exercise(name, solution, stub, launchers, bugs = [], hdrs = [], deps = [], **kwargs):
    """A GPU exercise: `:name` is the learner's code (or the solution), `:name_solution_copy` the
    solution with each launcher ex_X renamed solution_X. `name` is the exercise's name."""
    v = _variants(name, solution, stub, bugs)
    cuda = solution.endswith(".cu")
    rename = ["-D%s=solution_%s" % (l, l[len("ex_"):]) for l in launchers]
    targets = {}
    built = {}  # source -> its library (the stub serves two settings)
    for setting, src, learner in v:
        if src not in built:
            built[src] = "%s__variant%d" % (name, len(built))
            if cuda:
                cuda_library(name = built[src], srcs = [src], hdrs = hdrs, deps = deps,
                             warnings_as_errors = _STRICT if learner else True, **kwargs)
            else:
                native.cc_library(name = built[src], srcs = [src] + hdrs, deps = deps,
                                  copts = (["-Wno-error"] if learner else []) + _STRICT_COPTS, **kwargs)
        targets[setting or "//conditions:default"] = ":" + built[src]
    native.alias(name = name, actual = select(targets))
    if cuda:
        cuda_library(name = name + "_solution_copy", srcs = [solution], hdrs = hdrs, deps = deps,
                     nvcc_flags = rename, **kwargs)
    else:
        native.cc_library(name = name + "_solution_copy", srcs = [solution] + hdrs, deps = deps,
                          copts = rename, **kwargs)
