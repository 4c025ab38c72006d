#!/usr/bin/env bash
# WikiText-2 perplexity of a tiny trained model for every KV cache codec × weight format
# (docs/BENCHMARKS.md, "KV cache codecs (CPU)"; MODEL=testdata/models/tq-tiny-deepseek-v3 for the
# MLA latent cache, §11).
#
#   [MODEL=dir] tools/bench_kv_ppl.sh [NUM_TOKENS] [THREADS]
#
# Compresses testdata/models/tq-tiny-qwen3 to TQ4 and TQ3 (our defaults: least-squares gain),
# then runs `tqctl eval-ppl --kv-codec C` on testdata/data/wikitext-2/test.txt (tokenized in one
# piece, independent windows of 256 from token 0) over NUM_TOKENS tokens (default 16384 = the 64
# windows of reference.json) for each codec: the presets with the spec's defaults (boundary
# layers, sinks), the compressed presets bare (boundary=0, sink=0: the codec alone on every
# layer), and the plugin presets with QJL keys (not for MLA models). Prints a markdown table: codec (canonical name),
# KV bytes per token of this model (6 layers × 2 KV heads × head_dim 64, K + V), compression vs
# bf16, capacity in tokens per GB (10^9 bytes; sinks add a fixed 12 KiB per sequence), and PPL
# per weight format with its change vs the bf16 cache under the same weights.
set -euo pipefail
cd "$(dirname "$0")/.."
num=${1:-16384}
threads=${2:-2}
bazel build --disk_cache="$HOME/.cache/tqserve-bazel" //services/tqctl >/dev/null 2>&1
tqctl=bazel-bin/services/tqctl/tqctl
src=${MODEL:-testdata/models/tq-tiny-qwen3}
data=testdata/data/wikitext-2/test.txt
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$tqctl" compress "$src" "$work/tq4" --bits 4 --threads "$threads" --quiet >/dev/null
"$tqctl" compress "$src" "$work/tq3" --bits 3 --threads "$threads" --quiet >/dev/null
weights=("BF16:$src" "TQ4:$work/tq4" "TQ3:$work/tq3")
codecs=(bf16 fp8 k8v4 4bit_nc k3v4_nc 3bit_nc turbo4 turbo3 k4v3)
for c in k8v4 4bit_nc k3v4_nc 3bit_nc turbo4 turbo3 k4v3; do codecs+=("$c:boundary=0,sink=0"); done
# QJL compresses keys; an MLA cache has none to compress (k_pe passes through) and refuses it.
if ! grep -q '"kv_lora_rank"' "$src/config.json"; then
  for c in turbo4 turbo3 k4v3; do codecs+=("$c:qjl=1,boundary=0,sink=0"); done
fi
results=$work/results.tsv
for w in "${weights[@]}"; do
  wname=${w%%:*}
  wdir=${w#*:}
  for c in "${codecs[@]}"; do
    out=$("$tqctl" eval-ppl --model "$wdir" --data "$data" --num-tokens "$num" --kv-codec "$c" \
      --threads "$threads" 2>/dev/null)
    name=$(sed -n 's/^kv_codec=\([^ ]*\) .*/\1/p' <<<"$out")
    bytes=$(sed -n 's/.*kv_bytes_per_token=\([0-9]*\).*/\1/p' <<<"$out")
    ppl=$(sed -n 's/^ppl=//p' <<<"$out")
    printf '%s\t%s\t%s\t%s\n' "$wname" "$name" "$bytes" "$ppl" >>"$results"
  done
done
python3 - "$results" "$num" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
weights = []
for w, *_ in rows:
    if w not in weights:
        weights.append(w)
codecs = []
for _, c, *_ in rows:
    if c not in codecs:
        codecs.append(c)
ppl = {(w, c): float(p) for w, c, _, p in rows}
nbytes = {c: int(b) for _, c, b, _ in rows}
base_bytes = nbytes["bf16"]
head = ["KV codec", "bytes/token", "vs bf16", "tokens/GB"]
for w in weights:
    head += [f"PPL {w} weights", "Δ"]
print(f"| {' | '.join(head)} |")
print("|" + "---|" * len(head))
for c in codecs:
    cells = [f"`{c}`", str(nbytes[c]), f"{base_bytes / nbytes[c]:.2f}×", f"{1e9 / nbytes[c]:,.0f}"]
    for w in weights:
        p, b = ppl[(w, c)], ppl[(w, "bf16")]
        cells += [f"{p:.4f}", "—" if c == "bf16" else f"{(p / b - 1) * 100:+.2f}%"]
    print(f"| {' | '.join(cells)} |")
print(f"\n{sys.argv[2]} tokens per run; Δ is against the bf16 KV cache with the same weights.")
PY
