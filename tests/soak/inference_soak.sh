#!/usr/bin/env bash
# Soak test of the inference server (not in CI): serves a model on the CPU and keeps
# `tqctl bench` running at a fixed concurrency for DURATION seconds, then reports the number of
# failed requests and the server's resident memory at start (after warm-up) and end.
#
#   tests/soak/inference_soak.sh [DURATION_S=600] [CONCURRENCY=16] [MODEL=testdata/models/tq-tiny-qwen3]
#
# Exit status 0 when no request failed and the server drained and exited cleanly.
set -euo pipefail
cd "$(dirname "$0")/../.."
duration=${1:-600}
concurrency=${2:-16}
model=${3:-testdata/models/tq-tiny-qwen3}
bazel build -c opt --disk_cache="$HOME/.cache/tqserve-bazel" //services/tqctl \
  //services/inference:tq-inference-server >/dev/null 2>&1
tqctl=bazel-bin/services/tqctl/tqctl
work=$(mktemp -d)
trap 'kill -9 $pid 2>/dev/null || true; rm -rf "$work"' EXIT
bazel-bin/services/inference/tq-inference-server --model "$model" --listen 127.0.0.1:0 --metrics_host 127.0.0.1 \
  --metrics_port 0 --port_file "$work/ports" --max_num_seqs 32 2>"$work/server.log" &
pid=$!
for _ in $(seq 1 600); do [[ -s "$work/ports" ]] && break; sleep 0.1; done
read -r port mport <"$work/ports"
for _ in $(seq 1 600); do
  curl -sf "http://127.0.0.1:$mport/metrics" | grep -q '^tq_server_ready 1' && break
  sleep 0.1
done
rss() { awk '/VmRSS/ {print $2 " kB"}' "/proc/$pid/status"; }
rss_start=$(rss)
echo "soak: ${duration}s at concurrency $concurrency on $model; server RSS at start $rss_start"
start=$(date +%s)
rounds=0 ok=0 failed=0
while (($(date +%s) - start < duration)); do
  out=$("$tqctl" bench --server "127.0.0.1:$port" --concurrency "$concurrency" --num-prompts $((concurrency * 8)) \
    --input-len 128 --output-len 64 --seed "$rounds" --json 2>&1) || true
  s=$(printf '%s\n' "$out" | grep -o '"completed": *[0-9]*' | grep -o '[0-9]*$' || echo 0)
  f=$(printf '%s\n' "$out" | grep -o '"failed": *[0-9]*' | grep -o '[0-9]*$' || echo 0)
  if [[ -z "$s" || "$s" == 0 ]]; then
    echo "bench round $rounds produced no result:"
    printf '%s\n' "$out" | tail -n 5
    failed=$((failed + concurrency * 8))
  else
    ok=$((ok + s))
    failed=$((failed + f))
  fi
  rounds=$((rounds + 1))
done
rss_end=$(rss)
metrics=$(curl -s "http://127.0.0.1:$mport/metrics")
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=
echo "rounds=$rounds requests_ok=$ok requests_failed=$failed"
echo "server RSS: start $rss_start, end $rss_end"
printf '%s\n' "$metrics" | grep -E '^(vllm:request_success_total|tq_requests_rejected_total|tq_requests_cancelled_total)' | grep -v ' 0$' || true
echo "server exit status: $status"
[[ $failed == 0 && $status == 0 ]]
