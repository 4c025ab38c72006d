"""Repository rule behind @local_cuda; see //bazel:cuda.bzl for what it provides."""

def _cuda_configure_impl(ctx):
    path = ctx.os.environ.get("CUDA_PATH", "/usr/local/cuda")
    nvcc = ctx.path(path + "/bin/nvcc")
    ctx.file("WORKSPACE", 'workspace(name = "local_cuda")\n')
    if not nvcc.exists:
        ctx.file("defs.bzl", "CUDA_AVAILABLE = False\nCUDA_PATH = %r\n" % path)
        ctx.file("BUILD.bazel", """# No CUDA toolkit at {path}: empty stand-ins, CUDA code compiled out.
package(default_visibility = ["//visibility:public"])

cc_library(name = "cuda")

cc_library(name = "cublas")

cc_library(name = "nccl")
""".format(path = path))
        return
    for d in ["include", "lib64"]:
        ctx.symlink(path + "/" + d, d)
    ctx.file("defs.bzl", "CUDA_AVAILABLE = True\nCUDA_PATH = %r\n" % path)
    lib = path + "/lib64"
    ctx.file("BUILD.bazel", """# CUDA toolkit at {path}.
package(default_visibility = ["//visibility:public"])

cc_library(
    name = "cuda",
    srcs = ["lib64/libcudart_static.a"],
    hdrs = glob(["include/*.h", "include/*.hpp", "include/crt/**", "include/cccl/**"]),
    defines = ["TQ_HAVE_CUDA=1"],
    includes = ["include", "include/cccl"],
    linkopts = ["-ldl", "-lrt", "-lpthread"],
)

cc_library(
    name = "cublas",
    linkopts = ["-L{lib}", "-Wl,-rpath,{lib}", "-lcublas", "-lcublasLt"],
    deps = [":cuda"],
)

cc_library(
    name = "nccl",
    linkopts = ["-L{lib}", "-Wl,-rpath,{lib}", "-lnccl"],
    deps = [":cuda"],
)
""".format(path = path, lib = lib))

cuda_configure = repository_rule(
    implementation = _cuda_configure_impl,
    local = True,
    environ = ["CUDA_PATH"],
)
