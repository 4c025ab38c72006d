#!/usr/bin/env bash
# Compression throughput and peak memory on a generated checkpoint (docs/BENCHMARKS.md).
#
#   tools/bench_compress.sh [SRC_DIR] [REPEATS]
#
# SRC_DIR defaults to /tmp/tq-bench-llama (generated once: 5 Llama-7B-shape layers + 32k vocab
# embeddings, 2.30 GB of BF16). Each configuration runs REPEATS times (default 3) after a sync;
# the best wall time is reported with its peak RSS (/usr/bin/time -v). "1 core" pins the whole
# process (all threads) to CPU 0 with taskset.
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:-/tmp/tq-bench-llama}
reps=${2:-3}
bazel build --disk_cache="$HOME/.cache/tqserve-bazel" //services/tqctl //tools:gen_checkpoint >/dev/null 2>&1
if [ ! -d "$src" ]; then
  bazel-bin/tools/gen_checkpoint --out "$src" --hidden 4096 --intermediate 11008 --layers 5 --vocab 32000
fi
bytes=$(python3 -c "import os,sys; print(sum(os.path.getsize(os.path.join(sys.argv[1],f)) for f in os.listdir(sys.argv[1]) if f.endswith('.safetensors')))" "$src")
out=$(mktemp -d)
echo "| format | cores | threads | best wall s | MB/s of BF16 source | MB/s per core | compress phase MB/s | peak RSS MB |"
echo "|---|---|---|---|---|---|---|---|"
for fmt in tq plugin; do
  for cfg in "1 1" "2 2"; do
    set -- $cfg
    cores=$1 threads=$2
    best=""
    for r in $(seq "$reps"); do
      rm -rf "$out/ck"; sync; sleep 2
      pin=(); [ "$cores" = 1 ] && pin=(taskset -c 0)
      /usr/bin/time -v "${pin[@]}" bazel-bin/services/tqctl/tqctl compress "$src" "$out/ck" \
        --format "$fmt" --threads "$threads" > /dev/null 2> "$out/log"
      wall=$(grep "Elapsed (wall" "$out/log" | awk '{print $NF}' | awk -F: '{print ($1*60)+$2}')
      rss=$(grep "Maximum resident" "$out/log" | awk '{print $NF}')
      phase=$(grep -E "\] compress: .*\(100%\)" "$out/log" | tail -1 | sed -E 's/.*out, ([0-9.]+) MB\/s.*/\1/')
      if [ -z "$best" ] || awk "BEGIN{exit !($wall < $best)}"; then best=$wall; best_rss=$rss; best_phase=$phase; fi
    done
    mbps=$(awk "BEGIN{printf \"%.0f\", $bytes/1e6/$best}")
    per=$(awk "BEGIN{printf \"%.0f\", $bytes/1e6/$best/$cores}")
    echo "| $fmt | $cores | $threads | $best | $mbps | $per | $best_phase | $((best_rss/1024)) |"
  done
done
rm -rf "$out"
