#!/usr/bin/env bash
# Serving benchmark of the inference server on this machine's CPU (docs/BENCHMARKS.md §7):
# starts tq-inference-server on MODEL and runs `tqctl bench` at each concurrency.
#
#   tools/bench_serving.sh [MODEL=testdata/models/tq-tiny-qwen3] [CONCURRENCIES="1 4 16"] [NUM_PROMPTS=64]
#       [INPUT_LEN=128] [OUTPUT_LEN=64]
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-testdata/models/tq-tiny-qwen3}
concurrencies=${2:-1 4 16}
num=${3:-64}
in_len=${4:-128}
out_len=${5:-64}
bazel build -c opt --disk_cache="$HOME/.cache/tqserve-bazel" //services/tqctl \
  //services/inference:tq-inference-server >/dev/null 2>&1
work=$(mktemp -d)
trap 'kill -9 $pid 2>/dev/null || true; rm -rf "$work"' EXIT
bazel-bin/services/inference/tq-inference-server --model "$model" --listen 127.0.0.1:0 --metrics_host 127.0.0.1 \
  --metrics_port 0 --port_file "$work/ports" 2>"$work/server.log" &
pid=$!
for _ in $(seq 1 600); do [[ -s "$work/ports" ]] && break; sleep 0.1; done
read -r port mport <"$work/ports"
for _ in $(seq 1 600); do
  curl -sf "http://127.0.0.1:$mport/metrics" | grep -q '^tq_server_ready 1' && break
  sleep 0.1
done
for c in $concurrencies; do
  echo "== $model, concurrency $c, $num prompts, input $in_len, output $out_len"
  bazel-bin/services/tqctl/tqctl bench --server "127.0.0.1:$port" --concurrency "$c" --num-prompts "$num" \
    --input-len "$in_len" --output-len "$out_len" --warmup "$c"
done
kill -TERM "$pid"
wait "$pid" || true
pid=
