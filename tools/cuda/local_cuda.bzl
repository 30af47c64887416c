"""A repository rule that exposes the installed CUDA toolkit to Bazel.

It links $CUDA_ROOT/include and $CUDA_ROOT/lib64 (default /usr/local/cuda) into an
external repository and declares the headers and the libraries we link against.

CUPTI (libcupti, the time breakdown's activity records: common/gpu/gpu_phase.h) is part of
the toolkit, but where depends on how it was installed: beside the other libraries
(include/cupti.h, lib64/libcupti.so: the pip-style layout, and this machine's), or under
extras/CUPTI/ (the .run and .deb installers). Either is found.
"""

# The folder under the toolkit's root that holds `name`, from `candidates`; fails with a
# message when none does.
def _find_under(ctx, root, candidates, name):
    for folder in candidates:
        if ctx.path(root + "/" + folder + "/" + name).exists:
            return folder
    fail("CUDA toolkit at %s has no %s in %s (CUPTI ships with the toolkit: is it installed?)" %
         (root, name, " or ".join(candidates)))

def _local_cuda_impl(ctx):
    root = ctx.os.environ.get("CUDA_ROOT", "/usr/local/cuda")
    if not ctx.path(root + "/include/cuda_runtime.h").exists:
        fail("CUDA toolkit not found at %s (set CUDA_ROOT to its root)" % root)
    ctx.symlink(root + "/include", "include")
    ctx.symlink(root + "/lib64", "lib64")
    cupti_include = _find_under(ctx, root, ["include", "extras/CUPTI/include"], "cupti.h")
    cupti_lib = _find_under(ctx, root, ["lib64", "extras/CUPTI/lib64"], "libcupti.so")
    if cupti_include != "include":
        ctx.symlink(root + "/" + cupti_include, "cupti_include")
    ctx.file("root.txt", root + "\n")
    ctx.file("cupti_lib.txt", root + "/" + cupti_lib + "\n")
    ctx.file("BUILD", """
package(default_visibility = ["//visibility:public"])

cc_library(
    name = "headers",
    hdrs = glob(["include/**"]),
    includes = ["include"],
)

# Dynamic libraries are found at run time through the rpath: beside the binary first ($ORIGIN:
# what tools/gpu_pack.sh packs there, libcupti and libcmocka), then in the toolkit.
cc_library(
    name = "cudart",
    linkopts = ["-L{root}/lib64", "-lcudart", "-Wl,-rpath,$$ORIGIN", "-Wl,-rpath,{root}/lib64"],
    deps = [":headers"],
)

cc_library(
    name = "cublas",
    linkopts = ["-L{root}/lib64", "-lcublasLt", "-lcublas", "-Wl,-rpath,$$ORIGIN", "-Wl,-rpath,{root}/lib64"],
    deps = [":cudart"],
)

# CUPTI's activity API (the breakdown's timer). tools/gpu_pack.sh packs libcupti.so.13 beside
# the binaries: on the GPU machine they load that copy, wherever its toolkit keeps its own.
cc_library(
    name = "cupti",
    hdrs = {cupti_hdrs},
    includes = {cupti_includes},
    linkopts = ["-L{cupti_lib}", "-lcupti", "-Wl,-rpath,$$ORIGIN", "-Wl,-rpath,{cupti_lib}"],
    deps = [":cudart"],
)

cc_library(
    name = "nccl",
    linkopts = ["-L{root}/lib64", "-lnccl", "-Wl,-rpath,$$ORIGIN", "-Wl,-rpath,{root}/lib64"],
    deps = [":cudart"],
)

exports_files(["root.txt", "cupti_lib.txt"])
""".format(
        root = root,
        cupti_lib = root + "/" + cupti_lib,
        cupti_hdrs = "[]" if cupti_include == "include" else 'glob(["cupti_include/**"])',
        cupti_includes = "[]" if cupti_include == "include" else '["cupti_include"]',
    ))

local_cuda = repository_rule(
    implementation = _local_cuda_impl,
    environ = ["CUDA_ROOT"],
    local = True,
)
