#!/usr/bin/env bash
# Builds Bazel targets for the GPU machine and packs them into .device.tar.xz (repository root)
# for the device tool to carry: device code for sm_90a only (--define cuda_archs=hopper, half the
# kernel images), binaries and their Debian shared libraries via tools/device_bundle.sh, debug
# sections stripped, one xz dictionary over everything (the binaries share most bytes). Fails if
# the tracked tree plus the pack would exceed the device tool's 64 MiB.
#
# Usage: tools/device_pack.sh //engine/runtime:engine_cuda_test //tools:engine_bench ...
#   then on the GPU machine: tar xJf .device.tar.xz && LD_LIBRARY_PATH=$PWD/.device/lib .device/bin/...
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -gt 0 ]] || { echo "usage: $0 //bazel:target ..." >&2; exit 2; }
bazel build --disk_cache="$HOME/.cache/tqserve-bazel" --define cuda_archs=hopper "$@" >/dev/null
bins=()
for t in "$@"; do
  pkg=${t#//}; pkg=${pkg%%:*}; name=${t##*:}
  [[ "$t" == *:* ]] || name=${pkg##*/}
  bins+=("bazel-bin/$pkg/$name")
done
rm -rf .device .device.tar.xz
tools/device_bundle.sh .device "${bins[@]}"
chmod -R u+w .device
strip --strip-debug .device/bin/* .device/lib/*
tar cf - .device | xz -T1 --lzma2=preset=6,dict=256MiB >.device.tar.xz
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
pack=$(stat -c %s .device.tar.xz)
echo "pack $((pack / 1048576)).$((pack % 1048576 * 10 / 1048576)) MiB + tree $((tree / 1048576)).$((tree % 1048576 * 10 / 1048576)) MiB (limit 64 MiB)"
if ((tree + pack > 62 * 1024 * 1024)); then  # 2 MiB of margin: the tool counted more than this sum once
  echo "too large for the device tool: pack fewer binaries" >&2
  exit 1
fi
echo "note: bazel-bin now holds sm_90a-only device code; a plain bazel build restores both archs"
