#!/usr/bin/env bash
# End-to-end: tqctl against a real tq-inference-server serving the tiny model on loopback.
# generate --server streams what the in-process engine generates, reports the finish reason,
# usage and timings, fails cleanly on a rejected request and cancels on Ctrl-C (the server
# aborts the request); info shows the model and loads; a tiny bench reports vllm's block.
set -euo pipefail
RUNFILES="${TEST_SRCDIR}/${TEST_WORKSPACE}"
TQCTL="$RUNFILES/services/tqctl/tqctl"
SERVER="$RUNFILES/services/inference/tq-inference-server"
TINY="$RUNFILES/testdata/models/tq-tiny-qwen3"
T="$TEST_TMPDIR"
fail() {
  echo "FAIL: $*" >&2
  echo "--- server log (tail)" >&2
  tail -20 "$T/server.log" >&2 || true
  exit 1
}

"$SERVER" --model "$TINY" --listen 127.0.0.1:0 --metrics_port 0 --threads 2 --port_file "$T/ports" \
  > "$T/server.log" 2>&1 &
SERVER_PID=$!
trap 'kill -KILL $SERVER_PID 2>/dev/null || true' EXIT
for _ in $(seq 300); do
  [[ -s "$T/ports" ]] && break
  kill -0 $SERVER_PID 2>/dev/null || fail "the server exited at startup"
  sleep 0.1
done
[[ -s "$T/ports" ]] || fail "no port file"
ADDR="127.0.0.1:$(cut -d' ' -f1 "$T/ports")"
# Every RPC is UNAVAILABLE until the model is loaded and warmed up.
for _ in $(seq 300); do
  "$TQCTL" info --server "$ADDR" > "$T/info.txt" 2> "$T/info.err" && break
  sleep 0.1
done
grep -q "state          ready" "$T/info.txt" || fail "info: not ready: $(cat "$T/info.txt" "$T/info.err")"

# --- info
grep -q "Qwen3ForCausalLM (qwen3), 6 layers, hidden size 256, vocabulary 4096" "$T/info.txt" \
  || fail "info model line: $(cat "$T/info.txt")"
grep -q "startup .*warmup" "$T/info.txt" || fail "info startup phases: $(cat "$T/info.txt")"
"$TQCTL" info --server "$ADDR" --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["model_info"]["vocab_size"] == 4096, d
assert d["model_info"]["eos_token_ids"] == [0], d
assert d["loads"]["ready"] is True, d
' || fail "info --json"

# --- generate: the server streams exactly what the in-process engine generates (greedy).
"$TQCTL" generate --server "$ADDR" --temperature 0 --max-tokens 20 --print-ids "Once upon a time" \
  > "$T/remote.out" 2> "$T/remote.err" || fail "generate --server: $(cat "$T/remote.err")"
"$TQCTL" generate --model "$TINY" --threads 1 --temperature 0 --max-tokens 20 --print-ids "Once upon a time" \
  > "$T/local.out" 2> /dev/null || fail "generate --model"
cmp -s "$T/remote.out" "$T/local.out" \
  || fail "remote and in-process output differ: $(diff "$T/remote.out" "$T/local.out")"
[[ $(tail -1 "$T/remote.out" | wc -w) == 20 ]] || fail "--print-ids line: $(cat "$T/remote.out")"
grep -q "^finish: length; usage: prompt 6, completion 20 tokens; ttft .* ms, e2e .* ms, .* tokens/s" \
  "$T/remote.err" || fail "generate stats line: $(cat "$T/remote.err")"

# Stop string (matched across tokens, not printed), logprobs, caller's request id.
"$TQCTL" generate --server "$ADDR" --temperature 0 --max-tokens 20 --stop "LORD|nothing" --logprobs \
  --request-id tqctl-test-1 "Once upon a time" > "$T/stop.out" 2> "$T/stop.err" || fail "generate --stop"
grep -q 'finish: stop_sequence (string "LORD")' "$T/stop.err" || fail "stop finish: $(cat "$T/stop.err")"
grep -q "request tqctl-test-1" "$T/stop.err" || fail "request id: $(cat "$T/stop.err")"
grep -q "LORD" "$T/stop.out" && fail "the stop string was printed: $(cat "$T/stop.out")"
tail -1 "$T/stop.out" | python3 -c '
import sys
v = [float(x) for x in sys.stdin.read().split()]
assert v and all(x <= 0 for x in v), v
' || fail "--logprobs line: $(cat "$T/stop.out")"

# A request the server rejects: exit 2 with the status and the server's message.
if "$TQCTL" generate --server "$ADDR" --top-p 2 "x" > /dev/null 2> "$T/bad.err"; then fail "top-p 2 accepted"; fi
grep -q "INVALID_ARGUMENT: .*top_p" "$T/bad.err" || fail "invalid argument message: $(cat "$T/bad.err")"
if "$TQCTL" generate --model "$TINY" --server "$ADDR" "x" 2> /dev/null; then fail "--model with --server"; fi

# Ctrl-C cancels the call; the server aborts the request.
"$TQCTL" generate --server "$ADDR" --ignore-eos --max-tokens 2000 "x" > "$T/cancel.out" 2> "$T/cancel.err" &
GEN_PID=$!
for _ in $(seq 100); do [[ -s "$T/cancel.out" ]] && break; sleep 0.1; done
kill -INT $GEN_PID
rc=0
wait $GEN_PID || rc=$?
[[ $rc == 130 ]] || fail "generate after SIGINT: exit $rc, $(cat "$T/cancel.err")"
grep -q "cancelled" "$T/cancel.err" || fail "cancel message: $(cat "$T/cancel.err")"
aborted=0
for _ in $(seq 50); do
  aborted=$("$TQCTL" info --server "$ADDR" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["loads"]["requests_aborted"])')
  [[ $aborted -ge 1 ]] && break
  sleep 0.1
done
[[ $aborted -ge 1 ]] || fail "the server did not abort the cancelled request"

# --- bench
"$TQCTL" bench --server "$ADDR" --num-prompts 4 --concurrency 2 --input-len 8 --output-len 4 \
  > "$T/bench.out" 2> "$T/bench.err" || fail "bench: $(cat "$T/bench.out" "$T/bench.err")"
for line in "============ Serving Benchmark Result ============" \
            "Successful requests:                     4" \
            "Failed requests:                         0" \
            "Maximum request concurrency:             2" \
            "Total input tokens:                      32" \
            "Total generated tokens:                  16" \
            "---------------Time to First Token----------------" \
            "P99 ITL (ms):" "Median TPOT (ms):" "Mean E2EL (ms):"; do
  grep -qF -- "$line" "$T/bench.out" || fail "bench output lacks '$line': $(cat "$T/bench.out")"
done
"$TQCTL" bench --server "$ADDR" --num-prompts 2 --input-len 4 --output-len 3 --json 2> /dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["completed"] == 2 and d["failed"] == 0, d
assert d["total_output_tokens"] == 6 and d["total_input_tokens"] == 8, d
assert 0 < d["median_ttft_ms"] <= d["p99_e2el_ms"], d
' || fail "bench --json"
if "$TQCTL" bench --server "$ADDR" --input-len 2040 --output-len 20 2> "$T/bench_bad.err"; then
  fail "bench beyond the context accepted"
fi
grep -q "exceed the model's context of 2048 tokens" "$T/bench_bad.err" || fail "bench context message"

# The server drains and exits 0 on SIGTERM.
kill -TERM $SERVER_PID
rc=0
wait $SERVER_PID || rc=$?
[[ $rc == 0 ]] || fail "server exit status $rc"
trap - EXIT
echo "tqctl_server_test: all checks passed"
