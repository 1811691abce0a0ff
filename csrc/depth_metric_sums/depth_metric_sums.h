// Host-side pieces shared by the CPU and CUDA entry points of depth_metric_sums (inline: the CPU and the CUDA
// kernels are built into separate libraries).
#pragma once

#include <torch/csrc/stable/tensor.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "common/tensor_views.h"

namespace depthmetric {
namespace depth_metric_sums {

using torch::stable::Tensor;

// The crop window (rows r0:r1, cols c0:c1) and depth range, checked and unpacked.
struct Window {
  int64_t r0, r1, c0, c1;
  int64_t rows() const { return r1 - r0; }
  int64_t cols() const { return c1 - c0; }
};

inline Window check_inputs(const Tensor& pred, const Tensor& gt, const std::optional<Tensor>& mask,
                    const std::optional<Tensor>& scale, double min_depth, double max_depth,
                    const std::vector<int64_t>& window) {
  check_floating(pred, "pred");
  check_dim(pred, 4, "pred (B,1,H,W)");
  DM_CHECK(pred.size(1) == 1, "pred must have one channel, got shape ", shape_str(pred.sizes()));
  check_shape(gt, pred.sizes(), "gt", "pred's B,1,H,W");
  DM_CHECK(gt.scalar_type() == pred.scalar_type(), "gt must have pred's dtype ", pred.scalar_type(), ", got ",
           gt.scalar_type());
  check_same_device(pred, gt, "pred", "gt");
  if (mask.has_value()) {
    check_shape(*mask, pred.sizes(), "mask", "pred's B,1,H,W");
    DM_CHECK(mask->scalar_type() == ScalarType::Bool, "mask must be a bool tensor, got ", mask->scalar_type());
    check_same_device(pred, *mask, "pred", "mask");
  }
  if (scale.has_value()) {
    check_shape(*scale, {pred.size(0)}, "scale", "(B,)");
    DM_CHECK(scale->scalar_type() == ScalarType::Double, "scale must be a float64 tensor, got ",
             scale->scalar_type());
    check_same_device(pred, *scale, "pred", "scale");
  }
  DM_CHECK(min_depth >= 0 && min_depth < max_depth, "need 0 <= min_depth < max_depth, got ", min_depth, ", ",
           max_depth);
  DM_CHECK(window.size() == 4, "window must be (row0, row1, col0, col1), got ", shape_str(window));
  const Window w{window[0], window[1], window[2], window[3]};
  DM_CHECK(0 <= w.r0 && w.r0 <= w.r1 && w.r1 <= pred.size(2) && 0 <= w.c0 && w.c0 <= w.c1 &&
               w.c1 <= pred.size(3),
           "window ", shape_str(window), " must lie inside the ", pred.size(2), "x", pred.size(3), " image");
  return w;
}

}  // namespace depth_metric_sums
}  // namespace depthmetric
