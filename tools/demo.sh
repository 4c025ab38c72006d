#!/usr/bin/env bash
# The demo: set up the machine, build, compress the tiny trained Qwen3 model into a local
# store on the CPU, and show what the compressed checkpoint holds.
#
#   tools/demo.sh [OUT_DIR]      (default: ./demo-out, ignored by git)
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
out=${1:-demo-out}
mkdir -p "$out"
out=$(cd "$out" && pwd)
bazel build --disk_cache="$HOME/.cache/tqserve-bazel" //services/tqctl 2>&1 | tail -n 2
tqctl=bazel-bin/services/tqctl/tqctl
src=testdata/models/tq-tiny-qwen3

echo
echo "== tqctl compress $src file://$out/tq-tiny-qwen3-tq3 --bits 3"
"$tqctl" compress "$src" "file://$out/tq-tiny-qwen3-tq3" --bits 3
echo
echo "== tqctl inspect file://$out/tq-tiny-qwen3-tq3 --source $src --summary"
"$tqctl" inspect "file://$out/tq-tiny-qwen3-tq3" --source "$src" --summary
echo
echo "== the same model in the turboquant-plus-vllm native format"
"$tqctl" compress "$src" "$out/tq-tiny-qwen3-plugin" --format plugin --quiet
"$tqctl" inspect "$out/tq-tiny-qwen3-plugin" --summary
