#!/usr/bin/env bash
# Where the time of one GPU decode step goes: runs tools/engine_bench (batch 1, 32 decode steps)
# under Nsight Systems for each checkpoint of tools/bench_engine_gpu.sh and prints the per-kernel
# GPU time summary. Run on the GPU machine from a bundle, after bench_engine_gpu.sh made WORK:
#   BIN=.device/bin tools/gpu_profile_engine.sh /tmp/tq-llama8b
# Writes <model>_kern.txt (and the API / memcpy summaries) to $OUT (default /tmp/gpu-profile).
set -uo pipefail
work=${1:-/tmp/tq-llama8b}
bin=${BIN:-.device/bin}
out=${OUT:-/tmp/gpu-profile}
mkdir -p "$out"
if ! command -v nsys >/dev/null; then
  # Nsight Compute instead: every kernel launch (graph nodes included) with its duration, for a
  # short run (16-token prompt, 4 decode steps), summed per kernel name.
  if ! command -v ncu >/dev/null; then
    echo "neither nsys nor ncu installed: no profile"
    exit 0
  fi
  for m in ${MODELS:-bf16 tq3}; do
    ncu --graph-profiling node --metrics gpu__time_duration.sum --csv --print-units base \
      "$bin/engine_bench" --model "$work/$m" --device cuda --batch 1 --prompt-len 16 \
      --decode-tokens ${DECODE_TOKENS:-4} --repeats 1 >"$out/${m}_ncu.csv" 2>"$out/${m}_ncu.err"
    echo "== $m: kernels by total time (ncu; load + 16-token prefill + warm-up + 4 decode steps)"
    python3 - "$out/${m}_ncu.csv" <<'PY'
import csv, sys, collections
lines = [l for l in open(sys.argv[1]) if l.startswith('"')]
tot, cnt = collections.Counter(), collections.Counter()
for r in csv.DictReader(lines):
    if r.get("Metric Name") != "gpu__time_duration.sum":
        continue
    name = r["Kernel Name"].split("(")[0].split("<")[0][:60]
    tot[name] += float(r["Metric Value"].replace(",", ""))
    cnt[name] += 1
all_ns = sum(tot.values())
for name, ns in tot.most_common(25):
    print(f"{100 * ns / all_ns:6.1f}%  {ns / 1e6:9.3f} ms  {cnt[name]:6d} x  {ns / cnt[name] / 1e3:8.2f} us  {name}")
PY
  done
  exit 0
fi
for m in ${MODELS:-bf16 tq3}; do
  rep="$out/prof_$m"
  nsys profile -t cuda --cuda-graph-trace=node -o "$rep" --force-overwrite true \
    "$bin/engine_bench" --model "$work/$m" --device cuda --batch 1 --prompt-len 128 \
    --decode-tokens 32 >"$out/${m}_run.txt" 2>&1
  nsys stats -r cuda_gpu_kern_sum -f csv "$rep.nsys-rep" >"$out/${m}_kern.csv" 2>/dev/null
  nsys stats -r cuda_gpu_mem_time_sum,cuda_api_sum "$rep.nsys-rep" >"$out/${m}_api.txt" 2>/dev/null
  rm -f "$rep.nsys-rep" "$rep.sqlite"
  echo "== $m: top kernels by total GPU time (whole run: load, prefill, decode)"
  # CSV columns: Time (%), Total Time (ns), Instances, Avg (ns), ..., Name
  python3 - "$out/${m}_kern.csv" <<'PY'
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if r]
hdr = next(i for i, r in enumerate(rows) if r and r[0].startswith("Time"))
for r in rows[hdr + 1: hdr + 16]:
    name = r[-1][:90]
    print(f"{float(r[0]):6.1f}%  {int(float(r[1]))/1e6:9.2f} ms  {int(r[2]):7d} x  {float(r[3])/1e3:8.2f} us  {name}")
PY
done
