// File: kernels/cuda/launch.h
//
// Host side of programmatic dependent launch (PDL, sm_90+): while a ScopedProgrammaticLaunch is
// alive on a thread, the kernels of nn_ops, kv_attention, tq_linear, moe_ops and mla_ops that
// this thread launches carry cudaLaunchAttributeProgrammaticStreamSerialization. Each such
// kernel starts with griddepcontrol.wait (kernels/cuda/pdl.cuh) before it touches memory, so the
// stream order is kept; what is gained is the launch latency, which overlaps the previous
// kernel's tail (the engine turns it on while it captures decode steps into CUDA graphs).
// Only enable it on devices of compute capability 9.0 or newer.
#ifndef TQSERVE_KERNELS_CUDA_LAUNCH_H_
#define TQSERVE_KERNELS_CUDA_LAUNCH_H_

namespace tq::cuda {

// Whether launches from this thread use programmatic stream serialization.
inline bool& ProgrammaticLaunchOnThisThread() {
  static thread_local bool on = false;
  return on;
}

class ScopedProgrammaticLaunch {
 public:
  explicit ScopedProgrammaticLaunch(bool on) : prev_(ProgrammaticLaunchOnThisThread()) {
    ProgrammaticLaunchOnThisThread() = on;
  }
  ~ScopedProgrammaticLaunch() { ProgrammaticLaunchOnThisThread() = prev_; }
  ScopedProgrammaticLaunch(const ScopedProgrammaticLaunch&) = delete;
  ScopedProgrammaticLaunch& operator=(const ScopedProgrammaticLaunch&) = delete;

 private:
  bool prev_;
};

}  // namespace tq::cuda

#endif  // TQSERVE_KERNELS_CUDA_LAUNCH_H_
