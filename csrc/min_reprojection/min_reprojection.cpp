// Schema and shared input handling of depthmetric::min_reprojection.
#include "min_reprojection/min_reprojection.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#include "common/tensor_views.h"

namespace depthmetric {
namespace minrep {

namespace {
void check_images(const at::Tensor& target, at::TensorList images, const char* name) {
  for (const auto& t : images) {
    check_shape(t, target.sizes(), name, "the target's B,C,H,W");
    DM_CHECK(t.scalar_type() == target.scalar_type(), name, " images must have the target's dtype ",
             target.scalar_type(), ", got ", t.scalar_type());
    check_same_device(target, t, "target", name);
  }
}
}  // namespace

void check_forward(const at::Tensor& target, at::TensorList warped, at::TensorList sources,
                   const at::Tensor& noise, double alpha) {
  check_floating(target, "target");
  check_dim(target, 4, "target (B,C,H,W)");
  DM_CHECK(target.size(2) >= 2 && target.size(3) >= 2, "reflection padding needs H and W >= 2, got ",
           shape_str(target.sizes()));
  const auto S = static_cast<int64_t>(warped.size());
  DM_CHECK(S >= 1 && S <= kMaxSources, "between 1 and ", kMaxSources, " warped images, got ", S);
  DM_CHECK(sources.empty() || static_cast<int64_t>(sources.size()) == S,
           "sources must be empty (no auto-masking) or one per warped image, got ", sources.size(), " for ", S);
  check_images(target, warped, "warped");
  check_images(target, sources, "sources");
  DM_CHECK(alpha >= 0 && alpha <= 1, "alpha must be in [0, 1], got ", alpha);
  if (!sources.empty()) {
    check_shape(noise, {S, target.size(0), target.size(2), target.size(3)}, "noise", "S,B,H,W");
    DM_CHECK(noise.scalar_type() == at::toOpMathType(target.scalar_type()),
             "noise must have the accumulation dtype ", at::toOpMathType(target.scalar_type()));
    check_same_device(target, noise, "target", "noise");
  }
}

void check_backward(const at::Tensor& grad_loss, const at::Tensor& target, at::TensorList warped,
                    const at::Tensor& winner, double alpha) {
  check_forward(target, warped, {}, at::Tensor(), alpha);
  const auto B = target.size(0), H = target.size(2), W = target.size(3);
  check_shape(grad_loss, {B, H, W}, "grad_loss", "B,H,W");
  DM_CHECK(grad_loss.scalar_type() == at::toOpMathType(target.scalar_type()),
           "grad_loss must have the accumulation dtype");
  check_shape(winner, {B, H, W}, "winner", "B,H,W");
  DM_CHECK(winner.scalar_type() == at::kLong, "winner must be int64, got ", winner.scalar_type());
  check_same_device(target, grad_loss, "target", "grad_loss");
  check_same_device(target, winner, "target", "winner");
}

}  // namespace minrep
}  // namespace depthmetric

TORCH_LIBRARY_FRAGMENT(depthmetric, m) {
  // Monodepth2's per-pixel minimum reprojection (box3 SSIM + L1, alpha) over the warped images and, with
  // sources (auto-masking), the identity errors + noise. loss and winner are B,H,W; winner is 0..S-1 for a
  // warped image, S..2S-1 for an identity source (with mean_sources: 0 warped average, S identity average).
  m.def(
      "min_reprojection(Tensor target, Tensor[] warped, Tensor[] sources, Tensor noise, float alpha, "
      "bool mean_sources) -> (Tensor loss, Tensor winner)");
  m.def(
      "_min_reprojection_backward(Tensor grad_loss, Tensor target, Tensor[] warped, Tensor winner, float alpha, "
      "bool mean_sources) -> Tensor[]");
}
