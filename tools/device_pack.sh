#!/usr/bin/env bash
# Builds Bazel targets for the GPU machine and packs them into .device.tar.xz (repository root)
# for the device tool to carry: device code for sm_90a only (--define cuda_archs=hopper, half the
# kernel images), binaries and their Debian shared libraries via tools/device_bundle.sh, debug
# sections stripped, one xz dictionary over everything (the binaries share most bytes). Fails if
# the tree that travels (tracked + untracked-not-ignored files) plus the pack would come within
# 0.25 MiB of the device tool's 64 MiB (the e2e pack, ~14.7 MiB with a 48.9 MiB tree, just fits).
#
# Usage: tools/device_pack.sh //engine/runtime:engine_cuda_test //tools:engine_bench ...
#        tools/device_pack.sh tests     the CUDA test binaries tools/gpu_check.sh runs
#        tools/device_pack.sh bench     the benchmark tools (gen_checkpoint, tqctl, engine_bench)
#        tools/device_pack.sh e2e       the inference server and its e2e suite
#   (the sets are separate packs: together they pass the device tool's limit)
#   then on the GPU machine: tar xJf .device.tar.xz && LD_LIBRARY_PATH=$PWD/.device/lib .device/bin/...
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -gt 0 ]] || { echo "usage: $0 tests|bench|e2e|//bazel:target ..." >&2; exit 2; }
case "$1" in
  tests) set -- //kernels/cuda:nn_ops_test //kernels/cuda:tq_linear_test //kernels/cuda:sampling_test \
           //kernels/cuda:mla_ops_test //kernels/cuda:kv_attention_test //kernels/cuda:mla_attention_test \
           //engine/model:moe_cuda_test \
           //engine/runtime:engine_cuda_test ;;
  bench) set -- //tools:gen_checkpoint //services/tqctl:tqctl //tools:engine_bench //kernels/cuda:tq_linear_benchmark \
           //kernels/cuda:sampling_benchmark ;;
  e2e) set -- //tests/e2e:inference_server_test //services/inference:tq-inference-server ;;
esac
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
# What travels: tracked files and untracked files that git does not ignore (the device tool's
# README), plus this pack. Its limit is 64 MiB; keep 0.25 MiB of margin.
# (du skips files missing from the working tree, e.g. test models moved aside to make room.)
tree=$({ git ls-files -z; git ls-files -z --others --exclude-standard; } | { xargs -0 du -cb 2>/dev/null || true; } |
  grep -v total$ | awk '{s += $1} END {print s + 0}')
pack=$(stat -c %s .device.tar.xz)
echo "pack $((pack / 1048576)).$((pack % 1048576 * 10 / 1048576)) MiB + tree $((tree / 1048576)).$((tree % 1048576 * 10 / 1048576)) MiB (limit 64 MiB)"
if ((tree + pack > 64 * 1024 * 1024 - 256 * 1024)); then
  echo "too large for the device tool: pack fewer binaries (or leave untracked files out of the tree)" >&2
  exit 1
fi
echo "note: bazel-bin now holds sm_90a-only device code; a plain bazel build restores both archs"
