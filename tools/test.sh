#!/usr/bin/env bash
# Sets up the machine (tools/setup.sh) and runs the test suite with Bazel.
#
#   tools/test.sh            every test (about 6 minutes cold on 2 cores, ~2 when cached)
#   tools/test.sh --quick    skips tests tagged slow, fuzz or s3
#   tools/test.sh --s3       only the s3 suite (starts a Ceph RGW on loopback)
#   tools/test.sh //engine/...   any Bazel target patterns
#
# Ends with one line "N passed, N failed" (N = Bazel test targets); exits non-zero on failure.
# Builds share a disk cache outside the clone ($HOME/.cache/tqserve-bazel), so a fresh clone
# builds warm.
set -uo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh || { echo "0 passed, 1 failed"; exit 1; }

filters=()
targets=()
for a in "$@"; do
  case "$a" in
    --quick) filters+=(--test_tag_filters=-slow,-fuzz,-s3,-manual) ;;
    --s3) filters+=(--test_tag_filters=s3) ;;
    *) targets+=("$a") ;;
  esac
done
((${#targets[@]})) || targets=(//...)

log=$(mktemp)
bazel test --disk_cache="$HOME/.cache/tqserve-bazel" --test_summary=short "${filters[@]}" \
  "${targets[@]}" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}

passed=$(grep -cE '^//[^ ]+ +(\(cached\) )?PASSED' "$log")
failed=$(grep -cE '^//[^ ]+ +(\(cached\) )?(FAILED|TIMEOUT|NO STATUS|INCOMPLETE|FLAKY)' "$log")
if [ "$rc" != 0 ] && [ "$failed" = 0 ]; then failed=1; fi  # the build itself failed
rm -f "$log"
echo "$passed passed, $failed failed"
exit "$rc"
