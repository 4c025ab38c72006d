// File: kernels/cuda/sampling_reference.h
//
// The CPU reference of the device sampler (kernels/cuda/sampling.h): the same definition
// computed the plain way — sort every candidate, cut the prefix, walk it in double. The GPU
// parity test compares the kernel with it row by row; its own test checks it against Random123's
// Philox vectors and against the host sampler's distribution (engine/sampling/sampler.h).
#ifndef TQSERVE_KERNELS_CUDA_SAMPLING_REFERENCE_H_
#define TQSERVE_KERNELS_CUDA_SAMPLING_REFERENCE_H_

#include <cstdint>

#include "kernels/cuda/sampling.h"

namespace tq::cuda {

// One row: logits[0, vocab) (not modified), `masked` the row's masked ids
// (masked[p.masked_begin, p.masked_end)).
SampleRowResult SampleRowReference(const float* logits, int64_t vocab, const SampleRowParams& p,
                                   const int32_t* masked);

}  // namespace tq::cuda

#endif  // TQSERVE_KERNELS_CUDA_SAMPLING_REFERENCE_H_
