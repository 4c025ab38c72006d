// File: kernels/cuda/tq_gemv_int8_reference.h
//
// The exact CPU reference of the int8-activation TQ3 GEMV (kernels/cuda/tq_linear.h (f)):
// the same int8 quantization of x_rot and of the codebook, in the same float32 operations, and
// the same integer group dots. Plain C++ (no CUDA): the CI tests check it against the float TQ
// linear (kernels/cpu/linear.h); tq_linear_test checks the GPU kernels against it (the rotation's
// int8 output bitwise, y within float32 summation-order error).
//
//   std::vector<float> x_rot(kp);                       // tq::cpu::TqRotateInput of one row
//   std::vector<int8_t> x_q(kp); std::vector<float> x_qscale(groups);
//   tq::cuda::QuantizeRotatedInt8(x_rot.data(), kp, x_q.data(), x_qscale.data());
//   tq::cuda::TqGemvInt8Reference(packed, gains, codebook, n, k, x_q.data(), x_qscale.data(), y);
#ifndef TQSERVE_KERNELS_CUDA_TQ_GEMV_INT8_REFERENCE_H_
#define TQSERVE_KERNELS_CUDA_TQ_GEMV_INT8_REFERENCE_H_

#include <cstdint>

namespace tq::cuda {

// Per group of 128 (kp a multiple of 128): amax = max |x|; x_q = rint(x · (127 / amax)) clamped
// to ±127, x_qscale = amax / 127. An all-zero group: x_q = 0, scale 0. A group holding NaN or
// Inf: x_q = 0, scale NaN (so y becomes NaN).
void QuantizeRotatedInt8(const float* x_rot, int64_t kp, int8_t* x_q, float* x_qscale);

// The codebook as int8: c8[i] = rint(c[i] · (127 / max|c|)), c[i] ≈ c8[i] · scale with
// scale = max|c| / 127. TQ3's Lloyd–Max centroids give {−127, −79, −45, −14, 14, 45, 79, 127}.
struct TqInt8Codebook {
  int8_t c8[8] = {};
  float scale = 0.0f;
};
TqInt8Codebook MakeTqInt8Codebook(const float* codebook8);

// y[j] = scale · Σ_g float(Σ_t c8[idx(j, g, t)] · x_q[g·128 + t]) · (gain[j, g] · x_qscale[g])
// for one activation row; the group dots are exact int32, each group's term is float32 as on the
// GPU, the sum over groups is double (the GPU sums in float32 in its own order).
// packed / gains in the checkpoint layout (TQ3, G = 128), k unpadded.
void TqGemvInt8Reference(const uint8_t* packed, const float* gains, const float* codebook8,
                         int64_t n, int64_t k, const int8_t* x_q, const float* x_qscale,
                         double* y);

}  // namespace tq::cuda

#endif  // TQSERVE_KERNELS_CUDA_TQ_GEMV_INT8_REFERENCE_H_
