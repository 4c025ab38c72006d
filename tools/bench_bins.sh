# Sourced by the GPU/engine benchmark scripts: sets $gen, $tqctl and $bench to gen_checkpoint,
# tqctl and engine_bench — from $BIN when set (a bundle on the GPU machine), else built here by
# Bazel (the working directory becomes the repository root).
if [[ -z "${BIN:-}" ]]; then
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  bazel build -c opt --disk_cache="$HOME/.cache/tqserve-bazel" //services/tqctl //tools:gen_checkpoint \
    //tools:engine_bench >/dev/null 2>&1
  gen=bazel-bin/tools/gen_checkpoint tqctl=bazel-bin/services/tqctl/tqctl bench=bazel-bin/tools/engine_bench
else
  gen=$BIN/gen_checkpoint tqctl=$BIN/tqctl bench=$BIN/engine_bench
fi
