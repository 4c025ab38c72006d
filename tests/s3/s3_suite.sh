#!/usr/bin/env bash
# The s3 test suite: starts one real S3 server (Ceph RGW, tests/s3/rgw.sh) and the fault proxy
# on loopback, runs every S3 test binary against them, and stops both (by pid) on exit.
# Usage (Bazel sh_test): s3_suite.sh RGW_SH FAULT_PROXY TEST_BINARY...
set -uo pipefail
rgw_sh=$1 proxy_py=$2
shift 2
work="${TEST_TMPDIR:-$(mktemp -d)}/s3"
mkdir -p "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
  [ -n "${proxy_pid:-}" ] && kill "$proxy_pid" 2>/dev/null
  "$rgw_sh" stop "$work/rgw"
}
trap cleanup EXIT
if ! "$rgw_sh" start "$work/rgw" "$port" > "$work/rgw.out" 2>&1; then
  echo "could not start the S3 server:"; cat "$work/rgw.out"; tail -20 "$work"/rgw/log/*.log
  exit 1
fi
source "$work/rgw/env"
python3 "$proxy_py" --upstream "127.0.0.1:$port" --port-file "$work/proxy.port" &
proxy_pid=$!
for _ in $(seq 100); do [ -f "$work/proxy.port" ] && break; sleep 0.05; done
export TQ_TEST_S3_PROXY="http://127.0.0.1:$(cat "$work/proxy.port")"
echo "S3 server $AWS_ENDPOINT_URL_S3, fault proxy $TQ_TEST_S3_PROXY"
rc=0
for t in "$@"; do
  echo "=== $t"
  "$t" || rc=1
done
exit $rc
