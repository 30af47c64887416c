"""A repository rule that exposes the installed CUDA toolkit to Bazel.

It links $CUDA_ROOT/include and $CUDA_ROOT/lib64 (default /usr/local/cuda) into an
external repository and declares the headers and the libraries we link against.
"""

def _local_cuda_impl(ctx):
    root = ctx.os.environ.get("CUDA_ROOT", "/usr/local/cuda")
    if not ctx.path(root + "/include/cuda_runtime.h").exists:
        fail("CUDA toolkit not found at %s (set CUDA_ROOT to its root)" % root)
    ctx.symlink(root + "/include", "include")
    ctx.symlink(root + "/lib64", "lib64")
    ctx.file("root.txt", root + "\n")
    ctx.file("BUILD", """
package(default_visibility = ["//visibility:public"])

cc_library(
    name = "headers",
    hdrs = glob(["include/**"]),
    includes = ["include"],
)

# Dynamic libraries are found at run time through an rpath to the toolkit.
cc_library(
    name = "cudart",
    linkopts = ["-L{root}/lib64", "-lcudart", "-Wl,-rpath,{root}/lib64"],
    deps = [":headers"],
)

cc_library(
    name = "cublas",
    linkopts = ["-L{root}/lib64", "-lcublasLt", "-lcublas", "-Wl,-rpath,{root}/lib64"],
    deps = [":cudart"],
)

cc_library(
    name = "nccl",
    linkopts = ["-L{root}/lib64", "-lnccl", "-Wl,-rpath,{root}/lib64"],
    deps = [":cudart"],
)

exports_files(["root.txt"])
""".format(root = root))

local_cuda = repository_rule(
    implementation = _local_cuda_impl,
    environ = ["CUDA_ROOT"],
    local = True,
)
