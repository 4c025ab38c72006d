#!/usr/bin/env bash
# End-to-end decode speed on the GPU (docs/BENCHMARKS.md): an 8B-shape Llama (hidden 4096, MLP
# 14336, 32 layers, GQA 32/8, vocabulary 128256) with random BF16 weights, compressed to TQ3 and
# TQ4, each run by tools/engine_bench --device cuda (batch 1 and 8).
#
# Runs where the binaries are: from a bundle on the GPU machine (tools/device_bundle.sh), e.g.
#   BIN=.device/bin tools/bench_engine_gpu.sh /tmp/llama8b
# or from bazel-bin here (BIN unset). WORK (default /tmp/tq-llama8b) receives the checkpoints.
# MODELS (default "bf16 tq3 tq4"; empty: none) are the short-context runs, BITS (default "3 4")
# the compressions made, BENCH_ARGS extra engine_bench flags for them (e.g. "--temperature 0.8
# --top-p 0.9": sampled decode, the host sampler's cost included).
set -euo pipefail
work=${1:-/tmp/tq-llama8b}
layers=${LAYERS:-32}
source "$(dirname "$0")/bench_bins.sh"
mkdir -p "$work"
t0=$(date +%s)
[[ -f "$work/bf16/config.json" ]] || "$gen" --out "$work/bf16" --hidden 4096 --intermediate 14336 --layers "$layers" \
  --vocab 128256 --heads 32 --kv-heads 8 --shard-gib 4 >/dev/null
echo "generated in $(($(date +%s) - t0)) s: $(du -sh "$work/bf16" | cut -f1)"
for b in ${BITS:-3 4}; do
  t0=$(date +%s)
  [[ -f "$work/tq$b/tq_manifest.json" ]] || "$tqctl" compress "$work/bf16" "$work/tq$b" --bits "$b" --quiet
  echo "TQ$b compressed in $(($(date +%s) - t0)) s: $(du -sh "$work/tq$b" | cut -f1)"
done
for m in ${MODELS-bf16 tq3 tq4}; do
  echo "== $m"
  "$bench" --model "$work/$m" --device cuda --batch 1,8 --prompt-len 128 --decode-tokens 64 ${BENCH_ARGS:-}
done
# LONG_CONTEXT=4096,8000: TQ3 decode at those contexts with each KV cache of KV_CODECS (default
# bf16; e.g. KV_CODECS=bf16,turbo3 for the packed cache, docs/BENCHMARKS.md §12), attention by the
# engine's rule; PAGED_AB=1 adds the bf16 cache with the one-CTA-per-head PagedAttention forced
# (docs/BENCHMARKS.md §9).
for ctx in $(echo "${LONG_CONTEXT:-}" | tr "," " "); do
  for kv in $(echo "${KV_CODECS:-bf16}" | tr "," " "); do
    echo "== tq3 decode at context $ctx, KV $kv"
    "$bench" --model "$work/tq3" --device cuda --batch 1,8 --prompt-len 128 --decode-context "$ctx" \
      --decode-tokens 32 --kv-cache-gib 10 --repeats 1 --kv-codec "$kv"
  done
  if [[ "${PAGED_AB:-0}" == 1 ]]; then
    echo "== tq3 decode at context $ctx, KV bf16, attention paged"
    TQ_CUDA_ATTENTION=paged "$bench" --model "$work/tq3" --device cuda --batch 1,8 --prompt-len 128 \
      --decode-context "$ctx" --decode-tokens 32 --kv-cache-gib 10 --repeats 1
  fi
done
