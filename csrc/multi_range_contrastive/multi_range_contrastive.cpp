// Schema and shared input handling of depthmetric::multi_range_contrastive.
#include "multi_range_contrastive/multi_range_contrastive.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#include "common/tensor_views.h"

namespace depthmetric {
namespace mrc {

at::Tensor reduced_shifts(const at::Tensor& features, const at::Tensor& shifts) {
  check_same_device(features, shifts, "features", "shifts");
  DM_CHECK(shifts.scalar_type() == at::kLong && shifts.dim() == 2 && shifts.size(1) == 3,
           "shifts must be an int64 tensor of shape N,3 (batch, row, column shifts), got ",
           shifts.scalar_type(), " ", shape_str(shifts.sizes()));
  const auto sizes = at::tensor({features.size(0), features.size(2), features.size(3)}, shifts.options());
  return shifts.remainder(sizes).contiguous();
}

void check_forward(const at::Tensor& features, const at::Tensor& depth) {
  check_floating(features, "features");
  check_dim(features, 4, "features (B,C,H,W)");
  check_dim(depth, 3, "depth (B,H,W)");
  const auto B = features.size(0), H = features.size(2), W = features.size(3);
  check_shape(depth, {B, H, W}, "depth", "B,H,W of features");
  DM_CHECK(depth.scalar_type() == at::toOpMathType(features.scalar_type()),
           "depth must have the accumulation dtype of features (", at::toOpMathType(features.scalar_type()),
           "), got ", depth.scalar_type());
  check_same_device(features, depth, "features", "depth");
}

ForwardOutputs allocate_forward(const at::Tensor& features, int64_t n_shifts) {
  const auto B = features.size(0), H = features.size(2), W = features.size(3);
  const auto acc = features.options().dtype(at::toOpMathType(features.scalar_type()));
  return {at::empty({B, H, W}, acc), at::empty({B, H, W}, features.options().dtype(at::kInt)),
          at::empty({n_shifts, B, H, W}, acc)};
}

void check_backward(const at::Tensor& grad_loss, const at::Tensor& features, const at::Tensor& shifts,
                    const at::Tensor& coef) {
  check_dim(features, 4, "features (B,C,H,W)");
  const auto B = features.size(0), H = features.size(2), W = features.size(3);
  check_shape(grad_loss, {B, H, W}, "grad_loss", "B,H,W");
  check_shape(coef, {shifts.size(0), B, H, W}, "coef", "N,B,H,W");
  DM_CHECK(grad_loss.scalar_type() == coef.scalar_type(), "grad_loss and coef must share a dtype");
  check_same_device(features, grad_loss, "features", "grad_loss");
  check_same_device(features, coef, "features", "coef");
}

}  // namespace mrc
}  // namespace depthmetric

TORCH_LIBRARY_FRAGMENT(depthmetric, m) {
  m.def(
      "multi_range_contrastive(Tensor features, Tensor depth, Tensor shifts, float r_p, float[] range_lo, "
      "float[] range_hi, float[] margins) -> (Tensor loss, Tensor count, Tensor coef)");
  m.def(
      "_multi_range_contrastive_backward(Tensor grad_loss, Tensor features, Tensor shifts, Tensor coef) "
      "-> Tensor");
}
