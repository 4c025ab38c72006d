#!/usr/bin/env bash
# The GPU machine's check of the CUDA backend, run from a bundle (tools/device_bundle.sh; the
# machine has no Bazel): parity tests of the CUDA kernels, the engine on CUDA against the CPU,
# the inference server's end-to-end suite with --device cuda, and (BENCH=1) the 8B-shape
# end-to-end decode benchmark. Logs go to $OUT (default /tmp/gpu-check).
#
#   here:  tools/device_pack.sh tests   (then, in later calls, `e2e` and `bench`: all of them in
#          one pack pass the device tool's limit; the script runs whichever binaries the bundle
#          has, and BENCH=1 needs the `bench` pack)
#   there: tar xJf .device.tar.xz && tools/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
export LD_LIBRARY_PATH=$PWD/.device/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/device.txt"
# A runfiles tree, as Bazel would give the tests.
rf=$(mktemp -d)
mkdir -p "$rf/tqserve/services/inference"
[[ -x .device/bin/tq-inference-server ]] && cp .device/bin/tq-inference-server "$rf/tqserve/services/inference/"
for d in testdata tests proto; do ln -s "$PWD/$d" "$rf/tqserve/$d"; done
status=0
run() {  # name, command...
  local name=$1
  shift
  if "$@" >"$out/$name.log" 2>&1; then echo "PASS $name"; else echo "FAIL $name (log $name.log)"; status=1; fi
  grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$out/$name.log" | head -5
}
for t in nn_ops_test tq_linear_test sampling_test mla_ops_test kv_attention_test mla_attention_test moe_cuda_test \
  engine_cuda_test; do
  [[ -x .device/bin/$t ]] && run "$t" env TEST_SRCDIR="$rf" TEST_WORKSPACE=tqserve ".device/bin/$t"
done
grep -E 'max \||cuda: ' "$out/engine_cuda_test.log" | head -12
# The packed cache's tensor-core attention against the fp32 kernel on the same engine case.
[[ -x .device/bin/engine_cuda_test ]] && run engine_cuda_test_attention_fp32 env TEST_SRCDIR="$rf" TEST_WORKSPACE=tqserve \
  TQ_CUDA_ATTENTION_TC=0 .device/bin/engine_cuda_test --gtest_filter=*TensorCores*
# The e2e suite on CUDA (promtool and python3-grpcio are not on this machine).
[[ -x .device/bin/inference_server_test ]] && run inference_server_cuda env TEST_SRCDIR="$rf" TEST_WORKSPACE=tqserve TQ_TEST_DEVICE=cuda \
  timeout 300 .device/bin/inference_server_test --gtest_filter=-*Promtool*:*Python*
if [[ "${BENCH:-0}" == 1 ]]; then
  BIN=.device/bin tools/bench_engine_gpu.sh /tmp/tq-llama8b 2>&1 | tee "$out/bench_engine_gpu.txt"
fi
exit $status
