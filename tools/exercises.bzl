"""Graded exercises: a source file that is the solution normally and a stub under
`--config=exercises`.

    exercise_src(name = "layernorm_backward", solution = "x.c", stub = "exercises/x_stub.c")

defines a filegroup `:layernorm_backward` to put in a library's srcs. The stub compiles
but is wrong (it leaves its outputs zero), so its graded tests fail until the learner
writes the code. Graded tests carry the tags "graded" and "exercise=<name>";
tools/grade.sh runs them and prints a score per exercise.
"""

def exercise_src(name, solution, stub):
    native.filegroup(
        name = name,
        srcs = select({
            "//tools:exercises_mode": [stub],
            "//conditions:default": [solution],
        }),
    )
