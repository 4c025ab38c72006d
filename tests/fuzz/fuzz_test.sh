#!/usr/bin/env bash
# Runs a libFuzzer binary for a short time over its seed corpus (copied: libFuzzer adds to it).
# Usage: fuzz_test.sh FUZZER CORPUS_DIR SECONDS
set -euo pipefail
fuzzer=$1 corpus=$2 seconds=$3
work="${TEST_TMPDIR:-/tmp}/corpus-$(basename "$fuzzer")"
mkdir -p "$work"
cp "$corpus"/* "$work"/
"$fuzzer" -max_total_time="$seconds" -max_len=4096 -rss_limit_mb=2048 -timeout=10 \
  -print_final_stats=1 "$work" 2>&1 | tail -n 25
