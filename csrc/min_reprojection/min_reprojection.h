// Host-side pieces shared by the CPU and CUDA entry points of depthmetric::min_reprojection.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "common/macros.h"

namespace depthmetric {
namespace minrep {

constexpr int64_t kMaxSources = 8;  // warped images per call; the CUDA kernels take their views by value

// Checks target (B,C,H,W), warped and sources (S images each, or no sources: no auto-masking), the
// noise (S,B,H,W in the accumulation dtype when there are sources) and alpha.
void check_forward(const at::Tensor& target, at::TensorList warped, at::TensorList sources,
                   const at::Tensor& noise, double alpha);
void check_backward(const at::Tensor& grad_loss, const at::Tensor& target, at::TensorList warped,
                    const at::Tensor& winner, double alpha);

// The per-pixel selection of warped image s in backward: 1 where it won (min), 1/S where the warped
// average won (mean), else 0.
template <typename acc_t>
DM_HOST_DEVICE acc_t selected(int64_t winner, int64_t s, int64_t n_sources, bool mean_sources) {
  if (mean_sources) return winner == 0 ? acc_t(1) / static_cast<acc_t>(n_sources) : acc_t(0);
  return winner == s ? acc_t(1) : acc_t(0);
}

}  // namespace minrep
}  // namespace depthmetric
