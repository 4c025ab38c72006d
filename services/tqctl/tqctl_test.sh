#!/usr/bin/env bash
# End-to-end: the tqctl binary compresses the tiny model in both formats, inspects the results,
# and fails cleanly on bad input.
set -euo pipefail
TQCTL="${TEST_SRCDIR}/${TEST_WORKSPACE}/services/tqctl/tqctl"
TINY="${TEST_SRCDIR}/${TEST_WORKSPACE}/testdata/models/tq-tiny-qwen3"
OUT="${TEST_TMPDIR}/out"
fail() { echo "FAIL: $*" >&2; exit 1; }

"$TQCTL" --help | grep -q "compress SRC DST" || fail "top-level help"
"$TQCTL" compress --help | grep -q -- "--group-size" || fail "compress help"

"$TQCTL" compress "$TINY" "file://$OUT/tq3" --bits 3 --quiet > "$TEST_TMPDIR/c.log"
grep -q "42 quantized" "$TEST_TMPDIR/c.log" || fail "compress summary: $(cat "$TEST_TMPDIR/c.log")"
test -f "$OUT/tq3/tq_manifest.json" || fail "no manifest"

"$TQCTL" inspect "$OUT/tq3" --source "$TINY" > "$TEST_TMPDIR/i.log"
grep -q "42 quantized, 27 kept" "$TEST_TMPDIR/i.log" || fail "inspect counts: $(cat "$TEST_TMPDIR/i.log")"
grep -q "weighted NMSE" "$TEST_TMPDIR/i.log" || fail "inspect nmse"
grep -q "model.layers.0.self_attn.q_proj.weight.*TQ3 g128" "$TEST_TMPDIR/i.log" || fail "inspect table"
"$TQCTL" inspect "$OUT/tq3" --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["quantized_tensors"]==42, d' \
  || fail "inspect --json"

"$TQCTL" compress "$TINY" "$OUT/plugin" --format plugin --bits 4 --quiet > /dev/null
"$TQCTL" inspect "$OUT/plugin" --summary | grep -q "plugin format" || fail "plugin inspect"

# Bad input: clear errors, non-zero exit codes, nothing published.
if "$TQCTL" compress "$TINY" "$OUT/bad" --bits 5 2> "$TEST_TMPDIR/e.log"; then fail "bits 5 accepted"; fi
grep -q "bits" "$TEST_TMPDIR/e.log" || fail "bits error message"
if "$TQCTL" compress /nonexistent "$OUT/bad2" 2> "$TEST_TMPDIR/e.log"; then fail "missing source accepted"; fi
grep -q "not a directory" "$TEST_TMPDIR/e.log" || fail "missing source message: $(cat "$TEST_TMPDIR/e.log")"
if "$TQCTL" compress "$TINY" "gs://bucket/x" 2> "$TEST_TMPDIR/e.log"; then fail "gs accepted"; fi
grep -q "unsupported store" "$TEST_TMPDIR/e.log" || fail "unsupported store message"
if "$TQCTL" inspect "$TINY" 2> "$TEST_TMPDIR/e.log"; then fail "inspect of a non-TQ dir"; fi
grep -q "not a TQ checkpoint" "$TEST_TMPDIR/e.log" || fail "inspect message"
rm "$OUT/tq3/tq_manifest.json"
if "$TQCTL" inspect "$OUT/tq3" 2> "$TEST_TMPDIR/e.log"; then fail "incomplete checkpoint accepted"; fi
grep -q "incomplete checkpoint" "$TEST_TMPDIR/e.log" || fail "incomplete message"
if "$TQCTL" frobnicate 2>/dev/null; then fail "unknown command"; fi
echo "tqctl_test: all checks passed"
