#include "engine/model/linear_batch.h"

#include <algorithm>

#include "kernels/cpu/linear.h"

namespace tq {

void LinearBatch::Run(const std::vector<Job>& jobs, const float* x, int64_t m) {
  if (m == 0) return;
  // One rotated copy of x per distinct (group, block) among the TQ layers.
  rotated_keys_.clear();
  std::vector<const float*> x_rot(jobs.size(), nullptr);
  for (size_t j = 0; j < jobs.size(); ++j) {
    const Linear& lin = *jobs[j].linear;
    if (!lin.quantized()) continue;
    const auto key = lin.RotationKey();
    size_t slot = 0;
    while (slot < rotated_keys_.size() && rotated_keys_[slot] != key) ++slot;
    if (slot == rotated_keys_.size()) {
      rotated_keys_.push_back(key);
      if (rotated_.size() <= slot) rotated_.resize(slot + 1);
      const int64_t kp = cpu::TqPaddedK(lin.k(), key.first);
      rotated_[slot].resize(static_cast<size_t>(m) * kp);
      const int64_t k = lin.k();
      float* dst = rotated_[slot].data();
      // Rotate rows in parallel when there are many.
      pool_->ParallelFor(m, 4, [&](int64_t b, int64_t e) {
        cpu::TqRotateInput(x + b * k, e - b, k, k, key.first, key.second, dst + b * kp);
      });
    }
    x_rot[j] = rotated_[slot].data();
  }
  // Split the concatenated output rows of all jobs over the pool.
  std::vector<int64_t> offsets(jobs.size() + 1, 0);
  for (size_t j = 0; j < jobs.size(); ++j) offsets[j + 1] = offsets[j] + jobs[j].linear->n();
  const int64_t total = offsets.back();
  const int64_t grain = std::max<int64_t>(8, total / (8 * pool_->size()));
  pool_->ParallelFor(total, grain, [&](int64_t begin, int64_t end) {
    for (size_t j = 0; j < jobs.size() && begin < end; ++j) {
      const int64_t lo = std::max(begin, offsets[j]);
      const int64_t hi = std::min(end, offsets[j + 1]);
      if (lo >= hi) continue;
      const Linear& lin = *jobs[j].linear;
      lin.ForwardSlice(x, x_rot[j], m, jobs[j].y, lin.n(), lo - offsets[j], hi - offsets[j]);
    }
  });
}

}  // namespace tq
