#!/usr/bin/env bash
# Copies built binaries and the Debian shared libraries they need (Abseil, gRPC, protobuf, ...)
# into a folder that can travel to the GPU machine, which has CUDA/NCCL/libstdc++ but none of
# these. Run the binaries there with LD_LIBRARY_PATH=<dir>/lib.
#
# Usage: tools/device_bundle.sh OUT_DIR BINARY...
set -euo pipefail
out=$1
shift
mkdir -p "$out/bin" "$out/lib"
for bin in "$@"; do
  cp -f "$bin" "$out/bin/"
  ldd "$bin" | awk '/=> \//{print $3}' | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libstdc++.so*|libgcc_s.so*|libpthread.so*|libdl.so*|librt.so*) ;;
      libcuda*|libcublas*|libnccl*|libnvidia*) ;;
      *) cp -fL "$lib" "$out/lib/" ;;
    esac
  done
done
echo "bundled $# binaries, $(ls "$out/lib" | wc -l) libraries into $out"
