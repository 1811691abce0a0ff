// Host-side pieces shared by the CPU and CUDA entry points of multi_range_contrastive (inline: the CPU and
// the CUDA kernels are built into separate libraries).
#pragma once

#include <torch/csrc/stable/tensor.h>

#include <cstdint>
#include <optional>

#include "common/tensor_views.h"

namespace depthmetric {
namespace multi_range_contrastive {

using torch::stable::Tensor;

struct ForwardOutputs {
  Tensor loss;   // A,H,W: per-anchor-pixel sum of pair losses over samples (accumulation dtype)
  Tensor count;  // A,H,W int32: counted (positive + negative) pairs per pixel
  Tensor coef;   // N,A,H,W: per-pair gradient coefficient, saved for backward
};

// The anchor images: start .. start + count - 1 of the B images that samples are drawn from.
struct Anchors {
  int64_t start, count;
};

// Checks shared by both backends. Each backend brings the shifts into [0, size) itself (reduce_shift), so
// the kernels wrap indices with one compare.
inline void check_shifts(const Tensor& features, const Tensor& shifts) {
  check_same_device(features, shifts, "features", "shifts");
  DM_CHECK(shifts.scalar_type() == ScalarType::Long && shifts.dim() == 2 && shifts.size(1) == 3,
           "shifts must be an int64 tensor of shape N,3 (batch, row, column shifts), got ", shifts.scalar_type(),
           " ", shape_str(shifts.sizes()));
}

inline Anchors check_forward(const Tensor& features, const Tensor& depth, const Tensor& shifts, int64_t anchor_start,
                             std::optional<int64_t> anchor_count) {
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
  const Anchors anchors{anchor_start, anchor_count.value_or(B - anchor_start)};
  DM_CHECK(anchors.start >= 0 && anchors.count >= 0 && anchors.start + anchors.count <= B, "anchor images ",
           anchors.start, "..", anchors.start + anchors.count, " must lie in the batch of ", B);
  return anchors;
}

inline ForwardOutputs allocate_forward(const Tensor& features, int64_t n_shifts, const Anchors& anchors) {
  const auto A = anchors.count, H = features.size(2), W = features.size(3);
  const auto acc = accumulate_dtype(features.scalar_type());
  return {empty(features, {A, H, W}, acc), empty(features, {A, H, W}, ScalarType::Int),
          empty(features, {n_shifts, A, H, W}, acc)};
}

inline Anchors check_backward(const Tensor& grad_loss, const Tensor& features, const Tensor& shifts, const Tensor& coef,
                              int64_t anchor_start) {
  check_dim(features, 4, "features (B,C,H,W)");
  check_shifts(features, shifts);
  check_dim(grad_loss, 3, "grad_loss (A,H,W)");
  const Anchors anchors{anchor_start, grad_loss.size(0)};
  const auto B = features.size(0), H = features.size(2), W = features.size(3);
  DM_CHECK(anchors.start >= 0 && anchors.start + anchors.count <= B, "anchor images ", anchors.start, "..",
           anchors.start + anchors.count, " must lie in the batch of ", B);
  check_shape(grad_loss, {anchors.count, H, W}, "grad_loss", "A,H,W");
  check_shape(coef, {shifts.size(0), anchors.count, H, W}, "coef", "N,A,H,W");
  DM_CHECK(grad_loss.scalar_type() == coef.scalar_type(), "grad_loss and coef must share a dtype");
  check_same_device(features, grad_loss, "features", "grad_loss");
  check_same_device(features, coef, "features", "coef");
  return anchors;
}

}  // namespace multi_range_contrastive
}  // namespace depthmetric
