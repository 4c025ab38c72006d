#!/usr/bin/env bash
# The demo: set up the machine, build, compress the tiny trained Qwen3 model into a local
# store on the CPU, show what the compressed checkpoint holds, generate from it in-process, then
# start the inference server on the CPU, wait until it reports SERVING, stream a generation over
# gRPC with tqctl, show a few /metrics lines and shut the server down cleanly (SIGTERM drain).
#
#   tools/demo.sh [OUT_DIR]      (default: ./demo-out, ignored by git)
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
out=${1:-demo-out}
mkdir -p "$out"
out=$(cd "$out" && pwd)
bazel build --disk_cache="$HOME/.cache/tqserve-bazel" //services/tqctl //services/inference:tq-inference-server \
  2>&1 | tail -n 2
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
echo
echo "== tq-inference-server --model file://$out/tq-tiny-qwen3-tq3 --device cpu"
server=bazel-bin/services/inference/tq-inference-server
rm -f "$out/server.ports"  # a rerun's old ports must not be read before the server writes its own
"$server" --model "file://$out/tq-tiny-qwen3-tq3" --device cpu --listen 127.0.0.1:0 --metrics_host 127.0.0.1 \
  --metrics_port 0 --port_file "$out/server.ports" 2>"$out/server.log" &
server_pid=$!
trap 'kill -9 $server_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do [[ -s "$out/server.ports" ]] && break; sleep 0.1; done
read -r grpc_port metrics_port <"$out/server.ports"
# Ready = SERVING: weights verified, KV cache allocated, warm-up generation done.
for _ in $(seq 1 600); do
  curl -sf "http://127.0.0.1:$metrics_port/metrics" | grep -q '^tq_server_ready 1' && break
  sleep 0.1
done
echo "server ready on 127.0.0.1:$grpc_port (metrics on :$metrics_port); startup log:"
sed 's/^/  /' "$out/server.log"
echo
echo "== tqctl info --server 127.0.0.1:$grpc_port"
"$tqctl" info --server "127.0.0.1:$grpc_port"
echo
echo "== tqctl generate --server 127.0.0.1:$grpc_port (streamed over gRPC)"
"$tqctl" generate --server "127.0.0.1:$grpc_port" --temperature 0.8 --top-p 0.95 --seed 7 --max-tokens 48 \
  "And God said"
echo
echo "== a few /metrics lines"
curl -s "http://127.0.0.1:$metrics_port/metrics" |
  grep -E '^(vllm:(request_success_total|generation_tokens_total|prompt_tokens_total|time_to_first_token_seconds_count|kv_cache_usage_perc)|tq_startup_phase_seconds|tq_model_info)' |
  sed 's/^/  /'
echo
echo "== SIGTERM: drain and exit"
kill -TERM "$server_pid"
wait "$server_pid" && echo "server exited cleanly (status 0)"
trap - EXIT
tail -n 2 "$out/server.log" | sed 's/^/  /'
