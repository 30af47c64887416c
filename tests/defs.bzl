"""cmocka_test: a cc_test linked against cmocka and the shared test helpers."""

def cmocka_test(name, srcs, deps = [], gpu = False, **kwargs):
    """A cmocka test. gpu = True tags it so tools/gpu can pick out the GPU tests.

    GPU tests still run everywhere: each case skips itself, with a message, when there is
    no GPU (tests/test_util.h: SKIP_WITHOUT_GPU).
    """
    native.cc_test(
        name = name,
        srcs = srcs,
        deps = deps + [
            "//tests:test_util",
            "//third_party/system:cmocka",
        ],
        tags = kwargs.pop("tags", []) + (["gpu"] if gpu else []),
        **kwargs
    )
