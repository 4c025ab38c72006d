#!/usr/bin/env bash
# The demo: set up the machine, build, compress the tiny trained Qwen3 model into a local
# store on the CPU, show what the compressed checkpoint holds, and stream generations from it
# with the CPU inference engine.
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
echo
echo "== tqctl generate --model $out/tq-tiny-qwen3-tq3 (CPU engine, from the TQ3 codes, greedy)"
"$tqctl" generate --model "$out/tq-tiny-qwen3-tq3" --temperature 0 --max-tokens 48 "And God said"
echo
echo "== the same prompt on the BF16 source, and sampled at temperature 0.8 (seed 7) from TQ3"
"$tqctl" generate --model "$src" --temperature 0 --max-tokens 48 --quiet "And God said"
"$tqctl" generate --model "$out/tq-tiny-qwen3-tq3" --temperature 0.8 --top-p 0.95 --seed 7 --max-tokens 48 --quiet "And God said"
echo
echo "== tqctl eval-ppl: WikiText-2 test, 16,384 tokens, BF16 vs TQ3"
for m in "$src" "$out/tq-tiny-qwen3-tq3"; do
  printf '%s: ' "$m"
  "$tqctl" eval-ppl --model "$m" --data testdata/data/wikitext-2/test.txt --num-tokens 16384 2>/dev/null | tail -n 1
done
