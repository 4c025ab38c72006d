"""cc_grpc_library for system protobuf/gRPC (no rules_proto/grpc rules exist offline).

protoc and grpc_cpp_plugin come from Debian (/usr/bin/protoc, /usr/bin/grpc_cpp_plugin); the
generated code links against @system_grpc. Proto imports are resolved from the workspace root,
so `import "proto/tq/common/v1/x.proto";` style paths work across packages.

    cc_grpc_library(
        name = "compression_cc_grpc",
        srcs = ["compression.proto"],
        deps = [":common_cc_grpc"],   # other cc_grpc_library targets whose protos are imported
    )
"""

def cc_grpc_library(name, srcs, deps = [], proto_deps = [], grpc = True, visibility = None, testonly = False):
    """Generates and compiles *.pb.{h,cc} (and *.grpc.pb.{h,cc} when grpc=True) for `srcs`.

    Args:
      name: target name.
      srcs: .proto files of this package.
      deps: cc_grpc_library targets this one's protos import.
      proto_deps: the imported .proto files (labels), needed by protoc.
      grpc: also generate the gRPC service code.
      visibility: as for cc_library.
      testonly: as for cc_library.
    """
    outs = []
    for src in srcs:
        base = src[:-len(".proto")]
        outs += [base + ".pb.h", base + ".pb.cc"]
        if grpc:
            outs += [base + ".grpc.pb.h", base + ".grpc.pb.cc"]
    pkg = native.package_name()
    cmd = "/usr/bin/protoc -I. --cpp_out=$(GENDIR)"
    if grpc:
        cmd += " --grpc_out=$(GENDIR) --plugin=protoc-gen-grpc=/usr/bin/grpc_cpp_plugin"
    cmd += " " + " ".join(["%s/%s" % (pkg, s) if pkg else s for s in srcs])
    native.genrule(
        name = name + "_codegen",
        srcs = srcs + proto_deps,
        outs = outs,
        cmd = cmd,
        message = "protoc " + name,
        testonly = testonly,
    )
    native.cc_library(
        name = name,
        srcs = [o for o in outs if o.endswith(".cc")],
        hdrs = [o for o in outs if o.endswith(".h")],
        deps = deps + ["@system_grpc//:lib"],
        visibility = visibility,
        testonly = testonly,
    )
