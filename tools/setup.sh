#!/usr/bin/env bash
# Installs the Debian 12 packages tqserve builds and tests with (idempotent: skips apt when all
# are present). Needs root or sudo and Debian's package mirror. The CUDA toolkit is optional and
# not a Debian package: with nvcc at $CUDA_PATH or /usr/local/cuda the CUDA code is built too.
set -euo pipefail

PACKAGES=(
  bazel-bootstrap bazel-rules-java pkg-config g++ python3
  libabsl-dev libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  prometheus-cpp-dev nlohmann-json3-dev libssl-dev libcurl4-openssl-dev libpcre2-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang libclang-rt-14-dev
  python3-grpcio
  time openssl curl
  # The s3 test suite: a real S3 server (Ceph RGW), an independent client, the metrics linter.
  # (python3-grpcio above: the independent gRPC client of the inference tests.)
  ceph-mon ceph-osd radosgw ceph-common uuid-runtime python3-boto3 prometheus
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "tools/setup.sh: installing ${missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
