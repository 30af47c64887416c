"""cuda_library: compile .cu files with nvcc and wrap the objects in a cc_library.

rules_cuda cannot be fetched offline, so this small macro does the job: one genrule
per .cu file runs nvcc (from the toolkit that @local_cuda found), and the resulting
objects become the srcs of an ordinary cc_library that C code can depend on.

Settings (from .bazelrc, override with --define):
  CUDA_ARCHS  comma-separated list of GPU architectures: 80, 86, 89, 90a for machine code,
              compute_90 for PTX (tools/cuda/gencode.sh says what each means). Default
              (.bazelrc) 80,86,89,90a,compute_90: every GPU from an A100 up.

warnings_as_errors = False is for learners' code only (tools/exercises.bzl: the graded
exercises' stubs): their warnings are shown, not fatal. It may also be the label of a
config_setting: warnings are errors under that setting only (tools/grade.sh --strict).
"""

# Headers any kernel may include; listed so that editing them rebuilds the kernels.
_SHARED_HEADERS = ["//common:headers", "//kernels:headers"]

def _nvcc_flags(warnings_as_errors):
    return _NVCC_FLAGS if warnings_as_errors else _NVCC_FLAGS.replace(
        ",-Werror", "").replace(" -Werror=all-warnings", "")

_NVCC_FLAGS = " ".join([
    "-O3",
    "-std=c++17",
    "-lineinfo",
    "--expt-relaxed-constexpr",
    "-Xcompiler=-fPIC,-Wall,-Wextra,-Werror",
    "-Werror=all-warnings",
    "-I.",
    "-I$(GENDIR)",
])

def _nvcc_command(src, warnings_as_errors, nvcc_flags):
    return " ".join([
        "ROOT=$$(cat $(location @local_cuda//:root.txt));",
        "GENCODE=$$($(location //tools/cuda:gencode.sh) '$(CUDA_ARCHS)') || exit 1;",
        "$$ROOT/bin/nvcc $$GENCODE",
        _nvcc_flags(warnings_as_errors),
        " ".join(nvcc_flags),
        "-c $(location %s) -o $@" % src,
    ])

def cuda_library(name, srcs, hdrs = [], deps = [], nvcc_flags = [], warnings_as_errors = True, **kwargs):
    objs = []
    for src in srcs:
        obj = "_%s_%s.o" % (name, src.replace("/", "_").replace(":", "_").replace(".cu", ""))
        if type(warnings_as_errors) == "string":  # a config_setting: errors under it only
            cmd = select({
                warnings_as_errors: _nvcc_command(src, True, nvcc_flags),
                "//conditions:default": _nvcc_command(src, False, nvcc_flags),
            })
        else:
            cmd = _nvcc_command(src, warnings_as_errors, nvcc_flags)
        native.genrule(
            name = obj.replace(".", "_") + "_nvcc",
            srcs = [src] + hdrs + _SHARED_HEADERS,
            tools = ["@local_cuda//:root.txt", "//tools/cuda:gencode.sh"],
            outs = [obj],
            cmd = cmd,
            message = "nvcc " + src,
        )
        objs.append(obj)
    native.cc_library(
        name = name,
        srcs = objs,
        hdrs = hdrs,
        deps = deps + ["@local_cuda//:cudart"],
        alwayslink = True,
        **kwargs
    )
