#!/usr/bin/env bash
# MoE decode speed, TQ3 vs BF16 (docs/BENCHMARKS.md §13): a Qwen3-30B-A3B-shape Qwen3-MoE (hidden
# 2048, 32 query / 4 KV heads x 128, 128 experts of 768, top-8 renormalized, vocabulary 151,936)
# with random BF16 weights and LAYERS of its 48 layers (default 8), compressed to TQ3, each run by
# tools/engine_bench on DEVICE (default cpu; cuda on the GPU machine).
#
#   tools/bench_moe.sh /tmp/q3moe                                   # here, from bazel-bin
#   BIN=.device/bin DEVICE=cuda LAYERS=16 tools/bench_moe.sh /tmp/q3moe   # the GPU machine
set -euo pipefail
work=${1:-/tmp/q3moe}
layers=${LAYERS:-8}
device=${DEVICE:-cpu}
source "$(dirname "$0")/bench_bins.sh"
mkdir -p "$work"
t0=$(date +%s)
[[ -f "$work/bf16/config.json" ]] || "$gen" --out "$work/bf16" --hidden 2048 --heads 32 --kv-heads 4 --head-dim 128 \
  --layers "$layers" --vocab 151936 --experts 128 --experts-per-tok 8 --moe-intermediate 768 --shard-gib 4 >/dev/null
echo "generated in $(($(date +%s) - t0)) s: $(du -sh "$work/bf16" | cut -f1), $layers layers"
t0=$(date +%s)
[[ -f "$work/tq3/tq_manifest.json" ]] || "$tqctl" compress "$work/bf16" "$work/tq3" --bits 3 --quiet
echo "TQ3 compressed in $(($(date +%s) - t0)) s: $(du -sh "$work/tq3" | cut -f1)"
for m in bf16 tq3; do
  echo "== $m on $device"
  "$bench" --model "$work/$m" --device "$device" --batch ${BATCHES:-1} --prompt-len 32 --decode-tokens ${DECODE:-16} \
    --repeats 2 ${BENCH_ARGS:-}
done
