#!/usr/bin/env bash
# WikiText-2 perplexity of the tiny trained Qwen3 under each weight format (docs/BENCHMARKS.md).
#
#   tools/bench_ppl.sh [NUM_TOKENS] [KV_CODEC]
#
# Compresses testdata/models/tq-tiny-qwen3 to TQ4, TQ3 (norm correction and least squares),
# TQ2 and the kurtosis policy (base 3 bits), then runs `tqctl eval-ppl` on
# testdata/data/wikitext-2/test.txt (tokenized in one piece, independent windows of 256 as
# reference.json defines them) over NUM_TOKENS tokens (default 99840 = 390 windows, the
# models' README figure; 16384 reproduces reference.json's). KV_CODEC defaults to fp32 so that
# only the weights differ. Prints a markdown table: format, checkpoint bytes, bits/weight of the
# linear layers, PPL, change vs BF16.
set -euo pipefail
cd "$(dirname "$0")/.."
num=${1:-99840}
kv=${2:-fp32}
bazel build --disk_cache="$HOME/.cache/tqserve-bazel" //services/tqctl >/dev/null 2>&1
tqctl=bazel-bin/services/tqctl/tqctl
src=testdata/models/tq-tiny-qwen3
data=testdata/data/wikitext-2/test.txt
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
declare -a names=("BF16 (source)") dirs=("$src")
compress() {  # name dir args...
  local name=$1 dir=$work/$2
  shift 2
  "$tqctl" compress "$src" "$dir" --threads 2 --quiet "$@" >/dev/null
  names+=("$name")
  dirs+=("$dir")
}
compress "TQ4 ls" tq4 --bits 4
compress "TQ3 nc (plugin gain)" tq3nc --bits 3 --gain nc
compress "TQ3 ls" tq3ls --bits 3
compress "TQ3 plugin format" tq3plugin --bits 3 --format plugin
compress "TQ2 ls" tq2 --bits 2
compress "kurtosis policy, base TQ3 ls" kurt --bits 3 --policy kurtosis
echo "| weights | checkpoint bytes | PPL ($num tokens, KV $kv) | vs BF16 |"
echo "|---|---|---|---|"
base=""
for i in "${!names[@]}"; do
  d=${dirs[$i]}
  bytes=$(python3 -c "import os,sys; print(sum(os.path.getsize(os.path.join(sys.argv[1],f)) for f in os.listdir(sys.argv[1]) if f.endswith('.safetensors')))" "$d")
  ppl=$("$tqctl" eval-ppl --model "$d" --data "$data" --num-tokens "$num" --kv-codec "$kv" --threads 2 2>/dev/null | sed -n 's/^ppl=//p')
  [ -z "$base" ] && base=$ppl
  delta=$(python3 -c "print(f'{(float($ppl)/float($base)-1)*100:+.2f}%')")
  echo "| ${names[$i]} | $bytes | $ppl | $delta |"
done
