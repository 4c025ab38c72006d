// File: kernels/cuda/pdl.cuh (device code only; kernels/cuda/launch.h is the host switch)
//
// PdlEnter() is the first statement of every kernel launched through LaunchKernel: it waits
// until the previous kernel in the stream has completed and its writes are visible
// (griddepcontrol.wait), then lets the next programmatic launch start its CTAs
// (griddepcontrol.launch_dependents). Both are no-ops before sm_90 and for grids launched without
// the attribute. LaunchKernel is `kernel<<<grid, block, smem, stream>>>(args...)` with the
// attribute added while launch.h's switch is on for this thread.
#ifndef TQSERVE_KERNELS_CUDA_PDL_CUH_
#define TQSERVE_KERNELS_CUDA_PDL_CUH_

#include <cuda_runtime.h>

#include <utility>

#include "kernels/cuda/launch.h"

namespace tq::cuda {

// The two halves of PdlEnter, for kernels with work that may run before the wait (the int8
// GEMV loads its first weights) or that let the next kernel start late (after their main loop).
__device__ __forceinline__ void PdlWait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void PdlLaunchDependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ void PdlEnter() {
  PdlWait();
  PdlLaunchDependents();
}

// kernel<<<grid, block, smem, stream>>>(args...), with programmatic stream serialization when
// `programmatic` (the int8 GEMV path decides per launch; LaunchKernel follows launch.h's switch).
template <typename... KernelArgs, typename... Args>
cudaError_t LaunchKernelWith(bool programmatic, void (*kernel)(KernelArgs...), dim3 grid, dim3 block,
                             size_t smem, cudaStream_t stream, Args&&... args) {
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t lc = {};
  lc.gridDim = grid;
  lc.blockDim = block;
  lc.dynamicSmemBytes = smem;
  lc.stream = stream;
  lc.attrs = attr;
  lc.numAttrs = programmatic ? 1 : 0;
  return cudaLaunchKernelEx(&lc, kernel, std::forward<Args>(args)...);
}

template <typename... KernelArgs, typename... Args>
cudaError_t LaunchKernel(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem,
                         cudaStream_t stream, Args&&... args) {
  return LaunchKernelWith(ProgrammaticLaunchOnThisThread(), kernel, grid, block, smem, stream,
                          std::forward<Args>(args)...);
}

}  // namespace tq::cuda

#endif  // TQSERVE_KERNELS_CUDA_PDL_CUH_
