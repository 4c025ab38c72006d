#!/usr/bin/env bash
# Runs the CUDA TQ kernel parity test, the benchmark and a compute-sanitizer pass on the GPU
# machine (docs/BENCHMARKS.md §7, docs/gpu/README.md). Here:
#   bazel build -c opt //kernels/cuda:tq_linear_test //kernels/cuda:tq_linear_benchmark
#   tools/device_bundle.sh .device bazel-bin/kernels/cuda/tq_linear_test \
#       bazel-bin/kernels/cuda/tq_linear_benchmark
#   strip --strip-debug .device/bin/* .device/lib/*; tar -cJf device.tar.xz .device
# then carry device.tar.xz and this script (an ignored folder of the checkout the device tool
# sends, named in `carry`) and run there:  tar -xJf device.tar.xz && bash gpu_tq_linear.sh
# Environment: PROFILE=1 adds Nsight Compute summaries, SANITIZE=0 skips compute-sanitizer,
# TEST_T / BENCH_T / SAN_T are per-step time limits (s). Logs go to $OUT (or ./gpu-out).
set -u
out=${OUT:-gpu-out}
mkdir -p "$out"
export LD_LIBRARY_PATH=.device/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw --format=csv
} > "$out/device.txt" 2>&1
cat "$out/device.txt"
echo "== parity test"
timeout ${TEST_T:-300} .device/bin/tq_linear_test > "$out/tq_linear_test.log" 2>&1
echo "test rc=$?"
grep -E "^\[ +(PASSED|FAILED|OK) |Failure|worst|end to end|device 0" "$out/tq_linear_test.log" | head -80
echo "== benchmark"
timeout ${BENCH_T:-400} .device/bin/tq_linear_benchmark "$@" 2>&1 | tee "$out/tq_linear_benchmark.txt"
if [ "${PROFILE:-0}" = 1 ] && command -v ncu >/dev/null; then
  echo "== ncu"
  for shape in "14336 4096 3 1" "4096 4096 3 1"; do
    timeout 120 ncu -k regex:TqMmaKernel --launch-skip 10 --launch-count 1 \
      --section SpeedOfLight --section WarpStateStats --section SchedulerStats \
      --section Occupancy --section MemoryWorkloadAnalysis --section LaunchStats \
      --section InstructionStats .device/bin/tq_linear_benchmark --only $shape \
      > "$out/ncu_${shape// /_}.txt" 2>&1
    grep -E "Duration|DRAM Throughput|Memory Throughput|Compute \(SM\)|Issue Slots Busy|Achieved Occupancy|Registers|No Eligible|Stall|Warp Cycles Per Issued" "$out/ncu_${shape// /_}.txt" | head -30
  done
fi
if command -v cuobjdump >/dev/null; then
  cuobjdump -sass -arch sm_90a .device/bin/tq_linear_test 2>/dev/null | awk '/Function : .*TqMmaKernelILi3ELi1ELi1ELi1E/{p=1} p&&/Function : /&&!/ILi3ELi1ELi1ELi1E/{p=0} p' > "$out/sass_tq3_nt1_tt1_bf16.txt"
fi
if command -v cuobjdump >/dev/null; then
  cuobjdump -res-usage .device/bin/tq_linear_test 2>/dev/null | grep -A1 "TqMmaKernelILi3ELi2ELb0ELi1E" | head -4 > "$out/res_usage.txt"
  cuobjdump -sass -fun '_ZN2tq4cuda45_GLOBAL__N__' .device/bin/tq_linear_test >/dev/null 2>&1 || true
fi
if [ "${SANITIZE:-1}" = 1 ] && command -v compute-sanitizer >/dev/null; then
  echo "== compute-sanitizer memcheck / racecheck"
  timeout ${SAN_T:-240} compute-sanitizer --tool memcheck --print-limit 20 .device/bin/tq_linear_test \
    --gtest_filter='TqCudaRunnerTest.*:TqCudaMmaTest.Nan*' > "$out/sanitizer.log" 2>&1
  echo "memcheck rc=$?" | tee -a "$out/sanitizer.log"
  timeout ${SAN_T:-120} compute-sanitizer --tool racecheck --print-limit 20 .device/bin/tq_linear_test \
    --gtest_filter='TqCudaMmaTest.Nan*' >> "$out/sanitizer.log" 2>&1
  echo "racecheck rc=$?" | tee -a "$out/sanitizer.log"
  grep -E "ERROR SUMMARY|rc=" "$out/sanitizer.log"
fi
