#!/usr/bin/env bash
# CPU engine speed, BF16 vs TQ3 (docs/BENCHMARKS.md §6).
#
#   tools/bench_engine.sh [SRC_DIR] [THREADS]
#
# SRC_DIR defaults to /tmp/tq-bench-llama: 5 Llama-7B-shape layers (hidden 4096, MLP 11008,
# GQA 32/8) + a 32k vocabulary, random BF16 weights, generated once by tools/gen_checkpoint.
# Compresses it to TQ3 (SRC_DIR-tq3) and runs tools/engine_bench on both: prefill of a
# 128-token prompt, then greedy decode at batch 1 and 8. Then the same for the tiny trained
# Qwen3 in testdata/.
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:-/tmp/tq-bench-llama}
threads=${2:-$(nproc)}
bazel build -c opt --disk_cache="$HOME/.cache/tqserve-bazel" //services/tqctl //tools:gen_checkpoint \
  //tools:engine_bench >/dev/null 2>&1
if [[ ! -f "$src/config.json" ]]; then
  bazel-bin/tools/gen_checkpoint --out "$src" --hidden 4096 --intermediate 11008 --layers 5 --vocab 32000
fi
if [[ ! -f "$src-tq3/tq_manifest.json" ]]; then
  rm -rf "$src-tq3"
  bazel-bin/services/tqctl/tqctl compress "$src" "$src-tq3" --bits 3 >/dev/null
fi
tiny=testdata/models/tq-tiny-qwen3
tiny_tq3=$(mktemp -d)/tiny-tq3
trap 'rm -rf "$(dirname "$tiny_tq3")"' EXIT
bazel-bin/services/tqctl/tqctl compress "$tiny" "$tiny_tq3" --bits 3 >/dev/null
for m in "$src" "$src-tq3"; do
  echo "== $m"
  bazel-bin/tools/engine_bench --model "$m" --threads "$threads" --batch 1,8
done
for m in "$tiny" "$tiny_tq3"; do
  echo "== $m"
  bazel-bin/tools/engine_bench --model "$m" --threads "$threads" --batch 1,8 --prompt-len 256 \
    --decode-tokens 64
done
