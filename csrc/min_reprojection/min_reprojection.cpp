// Schema of depthmetric::min_reprojection.
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY_FRAGMENT(depthmetric, m) {
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
