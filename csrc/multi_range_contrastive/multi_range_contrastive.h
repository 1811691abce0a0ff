// Host-side pieces shared by the CPU and CUDA entry points of multi_range_contrastive (inline: the CPU and
// the CUDA kernels are built into separate libraries).
#pragma once

#include <torch/csrc/stable/tensor.h>

#include <cstdint>

#include "common/tensor_views.h"

namespace depthmetric {
namespace mrc {

using torch::stable::Tensor;

struct ForwardOutputs {
  Tensor loss;   // B,H,W: per-pixel sum of pair losses over samples (accumulation dtype)
  Tensor count;  // B,H,W int32: counted (positive + negative) pairs per pixel
  Tensor coef;   // N,B,H,W: per-pair gradient coefficient, saved for backward
};

// Checks shared by both backends. Each backend brings the shifts into [0, size) itself (reduce_shift), so
// the kernels wrap indices with one compare.
inline void check_shifts(const Tensor& features, const Tensor& shifts) {
  check_same_device(features, shifts, "features", "shifts");
  DM_CHECK(shifts.scalar_type() == ScalarType::Long && shifts.dim() == 2 && shifts.size(1) == 3,
           "shifts must be an int64 tensor of shape N,3 (batch, row, column shifts), got ", shifts.scalar_type(),
           " ", shape_str(shifts.sizes()));
}

inline void check_forward(const Tensor& features, const Tensor& depth, const Tensor& shifts) {
  check_floating(features, "features");
  check_dim(features, 4, "features (B,C,H,W)");
  check_dim(depth, 3, "depth (B,H,W)");
  const auto B = features.size(0), H = features.size(2), W = features.size(3);
  check_shape(depth, {B, H, W}, "depth", "B,H,W of features");
  const auto acc = accumulate_dtype(features.scalar_type());
  DM_CHECK(depth.scalar_type() == acc, "depth must have the accumulation dtype of features (", acc, "), got ",
           depth.scalar_type());
  check_same_device(features, depth, "features", "depth");
  check_shifts(features, shifts);
}

inline ForwardOutputs allocate_forward(const Tensor& features, int64_t n_shifts) {
  const auto B = features.size(0), H = features.size(2), W = features.size(3);
  const auto acc = accumulate_dtype(features.scalar_type());
  return {empty(features, {B, H, W}, acc), empty(features, {B, H, W}, ScalarType::Int),
          empty(features, {n_shifts, B, H, W}, acc)};
}

inline void check_backward(const Tensor& grad_loss, const Tensor& features, const Tensor& shifts, const Tensor& coef) {
  check_dim(features, 4, "features (B,C,H,W)");
  check_shifts(features, shifts);
  const auto B = features.size(0), H = features.size(2), W = features.size(3);
  check_shape(grad_loss, {B, H, W}, "grad_loss", "B,H,W");
  check_shape(coef, {shifts.size(0), B, H, W}, "coef", "N,B,H,W");
  DM_CHECK(grad_loss.scalar_type() == coef.scalar_type(), "grad_loss and coef must share a dtype");
  check_same_device(features, grad_loss, "features", "grad_loss");
  check_same_device(features, coef, "features", "coef");
}

}  // namespace mrc
}  // namespace depthmetric
