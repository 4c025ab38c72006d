"""CUDA without rules_cuda (none exists offline for Debian's Bazel 4.2.3).

* `cuda_configure` (repository rule, in WORKSPACE as @local_cuda) finds the toolkit at
  $CUDA_PATH or /usr/local/cuda. With a toolkit it exposes:
    @local_cuda//:cuda     headers + static cudart, and the define TQ_HAVE_CUDA=1
    @local_cuda//:cublas   cuBLAS (+Lt), linked dynamically with an rpath
    @local_cuda//:nccl     NCCL, linked dynamically with an rpath
  and `@local_cuda//:defs.bzl` sets CUDA_AVAILABLE = True. Without a toolkit the same targets
  exist but are empty, and CUDA_AVAILABLE = False: everything still builds, CUDA code paths are
  compiled out (guarded by `#if TQ_HAVE_CUDA`) and CUDA tests skip with a printed reason.

* `cuda_library` compiles .cu files with nvcc (genrule -> static archive) for sm_90a and sm_80
  and wraps the archive in a cc_library. Kernel sources must not include Abseil, protobuf or
  gRPC headers: launchers return cudaError_t and a host-side .cc turns that into absl::Status.

After a CUDA toolkit upgrade run `bazel clean --expunge` (the toolkit is not tracked).
"""

load("@local_cuda//:defs.bzl", "CUDA_AVAILABLE", "CUDA_PATH")

# The GPU targets we build for: Hopper (H100/H200, with the sm_90a-only instructions) and
# Ampere as the portable floor. Passed to nvcc as -gencode pairs.
CUDA_ARCHS = [
    ("compute_90a", "sm_90a"),
    ("compute_80", "sm_80"),
]

def _gencode(archs):
    return " ".join(["-gencode arch=%s,code=%s" % (a, c) for a, c in archs])

def cuda_library(name, srcs, hdrs = [], deps = [], nvcc_flags = [], visibility = None, testonly = False):
    """A cc_library whose device code is compiled by nvcc.

    Args:
      name: target name.
      srcs: .cu files, plus any private .cuh/.h they include (workspace-relative includes).
      hdrs: public host-side headers (plain C++; must compile without nvcc).
      deps: cc_library deps of the host-side users of this library.
      nvcc_flags: extra nvcc flags.
      visibility: as for cc_library.
      testonly: as for cc_library.
    """
    if not CUDA_AVAILABLE:
        native.cc_library(
            name = name,
            hdrs = hdrs,
            deps = deps + ["@local_cuda//:cuda"],
            visibility = visibility,
            testonly = testonly,
        )
        return
    cu_srcs = [s for s in srcs if s.endswith(".cu")]
    archive = "lib%s_device.a" % name
    # The command with the -gencode pairs left as {gencode}; `--define cuda_archs=hopper` keeps
    # only sm_90a (//bazel:cuda_archs_hopper).
    cmd = " ".join([
        CUDA_PATH + "/bin/nvcc",
        # TQ_HAVE_CUDA=1 as @local_cuda//:cuda defines it for host code, so that headers
        # shared by .cu and .cc files see the same declarations.
        "-ccbin /usr/bin/gcc -std=c++17 -O3 -lineinfo -DTQ_HAVE_CUDA=1",
        "-Xcompiler -fPIC --expt-relaxed-constexpr",
        "{gencode}",
        "-I. -I$(GENDIR)",
        " ".join(nvcc_flags),
        "-lib -o $@",
        " ".join(["$(location %s)" % s for s in cu_srcs]),
    ])
    native.genrule(
        name = name + "_nvcc",
        srcs = srcs + hdrs,
        outs = [archive],
        cmd = select({
            "//bazel:cuda_archs_hopper": cmd.replace("{gencode}", _gencode(CUDA_ARCHS[:1])),
            "//conditions:default": cmd.replace("{gencode}", _gencode(CUDA_ARCHS)),
        }),
        message = "nvcc " + name,
        testonly = testonly,
    )
    native.cc_library(
        name = name,
        srcs = [":" + archive],
        hdrs = hdrs,
        deps = deps + ["@local_cuda//:cuda"],
        linkstatic = 1,
        visibility = visibility,
        testonly = testonly,
    )
