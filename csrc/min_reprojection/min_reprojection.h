// Host-side pieces shared by the CPU and CUDA entry points of depthmetric::min_reprojection (inline: the CPU
// and the CUDA kernels are built into separate libraries).
#pragma once

#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <tuple>
#include <vector>

#include "common/check.h"
#include "common/tensor_views.h"

namespace depthmetric {
namespace min_reprojection {

using torch::stable::Tensor;
using TensorList = std::vector<Tensor>;

constexpr int64_t kMaxSources = 8;  // warped images per call; the CUDA kernels take their views by value

inline void check_images(const Tensor& target, const TensorList& images, const char* name) {
  for (const auto& t : images) {
    check_shape(t, target.sizes(), name, "the target's B,C,H,W");
    DM_CHECK(t.scalar_type() == target.scalar_type(), name, " images must have the target's dtype ",
             target.scalar_type(), ", got ", t.scalar_type());
    check_same_device(target, t, "target", name);
  }
}

// The checks of everything but the sources and their noise.
inline void check_target(const Tensor& target, const TensorList& warped, double alpha) {
  check_floating(target, "target");
  check_dim(target, 4, "target (B,C,H,W)");
  DM_CHECK(target.size(2) >= 2 && target.size(3) >= 2, "reflection padding needs H and W >= 2, got ",
           shape_str(target.sizes()));
  const auto S = static_cast<int64_t>(warped.size());
  DM_CHECK(S >= 1 && S <= kMaxSources, "between 1 and ", kMaxSources, " warped images, got ", S);
  check_images(target, warped, "warped");
  DM_CHECK(alpha >= 0 && alpha <= 1, "alpha must be in [0, 1], got ", alpha);
}

// Checks target (B,C,H,W), warped and sources (S images each, or no sources: no auto-masking), the
// noise (S,B,H,W in the accumulation dtype when there are sources) and alpha.
inline void check_forward(const Tensor& target, const TensorList& warped, const TensorList& sources, const Tensor& noise,
                   double alpha) {
  check_target(target, warped, alpha);
  const auto S = static_cast<int64_t>(warped.size());
  DM_CHECK(sources.empty() || static_cast<int64_t>(sources.size()) == S,
           "sources must be empty (no auto-masking) or one per warped image, got ", sources.size(), " for ", S);
  check_images(target, sources, "sources");
  if (!sources.empty()) {
    check_shape(noise, {S, target.size(0), target.size(2), target.size(3)}, "noise", "S,B,H,W");
    check_dtype(noise, accumulate_dtype(target.scalar_type()), "noise (the accumulation dtype)");
    check_same_device(target, noise, "target", "noise");
  }
}

inline void check_backward(const Tensor& grad_loss, const Tensor& target, const TensorList& warped, const Tensor& winner,
                    double alpha) {
  check_target(target, warped, alpha);
  const auto B = target.size(0), H = target.size(2), W = target.size(3);
  check_shape(grad_loss, {B, H, W}, "grad_loss", "B,H,W");
  check_dtype(grad_loss, accumulate_dtype(target.scalar_type()), "grad_loss (the accumulation dtype)");
  check_shape(winner, {B, H, W}, "winner", "B,H,W");
  check_dtype(winner, ScalarType::Long, "winner");
  check_same_device(target, grad_loss, "target", "grad_loss");
  check_same_device(target, winner, "target", "winner");
}

// loss (B,H,W, the accumulation dtype) and winner (B,H,W, int64), uninitialised.
inline std::tuple<Tensor, Tensor> allocate_forward(const Tensor& target) {
  const int64_t B = target.size(0), H = target.size(2), W = target.size(3);
  return {empty(target, {B, H, W}, accumulate_dtype(target.scalar_type())), empty(target, {B, H, W}, ScalarType::Long)};
}

// One gradient per warped image, each like its image.
inline TensorList allocate_gradients(const TensorList& warped) {
  TensorList grads;
  for (const auto& w : warped) grads.push_back(torch::stable::empty_like(w));
  return grads;
}

}  // namespace min_reprojection
}  // namespace depthmetric
