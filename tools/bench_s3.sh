#!/usr/bin/env bash
# Object-store benchmarks (docs/BENCHMARKS.md): upload/download throughput to a local Ceph RGW
# and to the filesystem, compression jobs file->file vs file->s3 in the same run, and peak RSS
# of an s3->s3 job on a >= 2 GB checkpoint.
#
#   tools/bench_s3.sh [SRC_DIR]    (default /tmp/tq-bench-llama, generated if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:-/tmp/tq-bench-llama}
bazel build --disk_cache="$HOME/.cache/tqserve-bazel" //services/tqctl //tools:gen_checkpoint //tools:store_bench >/dev/null 2>&1
[ -d "$src" ] || bazel-bin/tools/gen_checkpoint --out "$src" --hidden 4096 --intermediate 11008 --layers 5 --vocab 32000
work=$(mktemp -d)
trap 'tests/s3/rgw.sh stop "$work/rgw"; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
TQ_RGW_MEMSTORE_BYTES=$((10 << 30)) tests/s3/rgw.sh start "$work/rgw" "$port" >/dev/null
source "$work/rgw/env"
/usr/bin/python3 -c "import boto3,os; boto3.client('s3',endpoint_url=os.environ['AWS_ENDPOINT_URL_S3']).create_bucket(Bucket='bench')"

echo "### Store throughput (MB/s, best of 3)"
echo "| store | object | sequential writer | random-access writer | read |"
echo "|---|---|---|---|---|"
mkdir -p "$work/files"
bazel-bin/tools/store_bench "file://$work/files" 256 3
bazel-bin/tools/store_bench "s3://bench/store" 256 3

run() {  # label, then the tqctl compress arguments
  local label=$1; shift
  sync; sleep 2
  /usr/bin/time -v bazel-bin/services/tqctl/tqctl compress "$@" --quiet > "$work/out.log" 2> "$work/time.log"
  local wall rss
  wall=$(grep "Elapsed (wall" "$work/time.log" | awk '{print $NF}' | awk -F: '{print ($1*60)+$2}')
  rss=$(grep "Maximum resident" "$work/time.log" | awk '{print $NF}')
  local bytes
  bytes=$(python3 -c "import os,sys; print(sum(os.path.getsize(os.path.join(sys.argv[1],f)) for f in os.listdir(sys.argv[1]) if f.endswith('.safetensors')))" "$src")
  printf "| %s | %.2f | %.0f | %d |\n" "$label" "$wall" "$(python3 -c "print($bytes/1e6/$wall)")" $((rss / 1024))
}

echo
echo "### Compression jobs, TQ3, $(du -sh "$src" | cut -f1) BF16 source, 2 threads"
echo "| job | wall s | MB/s of source | peak RSS MB |"
echo "|---|---|---|---|"
run "file -> file" "$src" "$work/out-file"
run "file -> s3" "$src" "s3://bench/out-file-s3"
# The source into the bucket, then s3 -> s3.
/usr/bin/python3 - "$src" <<'PY'
import boto3, os, sys
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL_S3"])
for f in sorted(os.listdir(sys.argv[1])):
    s3.upload_file(os.path.join(sys.argv[1], f), "bench", "src/" + f)
PY
run "s3 -> s3" "s3://bench/src" "s3://bench/out-s3-s3"
bazel-bin/services/tqctl/tqctl verify s3://bench/out-s3-s3 | tail -1
