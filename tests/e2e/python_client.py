#!/usr/bin/python3
"""An independent client of tq.inference.v1.Inference: Debian's python3-grpcio.

usage: python_client.py STUB_DIR HOST:PORT

STUB_DIR holds Python stubs generated from proto/tq/inference/v1/inference.proto by protoc
(--python_out, --grpc_out with grpc_python_plugin). Streams one greedy generation and prints
what arrived, GetModelInfo and GetLoads; exits non-zero on any RPC error.
"""
import sys

import grpc

sys.path.insert(0, sys.argv[1])
from tq.inference.v1 import inference_pb2 as pb  # noqa: E402
from tq.inference.v1 import inference_pb2_grpc as rpc  # noqa: E402


def main():
    channel = grpc.insecure_channel(sys.argv[2])
    stub = rpc.InferenceStub(channel)
    req = pb.GenerateRequest(
        text="In the beginning God created",
        sampling=pb.SamplingParams(temperature=0.0),
        stopping=pb.StoppingCriteria(max_tokens=16, ignore_eos=True),
    )
    text, ids, complete = "", [], None
    for resp in stub.Generate(req, timeout=60):
        if resp.HasField("chunk"):
            text += resp.chunk.text
            ids.extend(resp.chunk.token_ids)
        else:
            complete = resp.complete
    if complete is None:
        print("no Complete message", file=sys.stderr)
        return 1
    print("text=%s" % ('"' + text.encode("unicode_escape").decode("ascii") + '"'))
    print("ids=%s" % ids)
    print("finish=%s completion_tokens=%d" % (pb.FinishReason.Name(complete.finish_reason),
                                              complete.usage.completion_tokens))
    info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
    print("model=%s format=%s" % (info.architecture, info.checkpoint_format))
    loads = stub.GetLoads(pb.GetLoadsRequest(), timeout=10)
    print("ready=%s running=%d" % (loads.ready, loads.running))
    return 0


if __name__ == "__main__":
    sys.exit(main())
