// Schema of depthmetric::multi_range_contrastive.
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY_FRAGMENT(depthmetric, m) {
  // The anchors are images anchor_start .. anchor_start + anchor_count - 1 (default: all B) of features; their
  // samples come from all B images (across="global": features is the gathered global batch, the anchors this
  // rank's images). loss and count are anchor_count,H,W, coef N,anchor_count,H,W; the backward's gradient is
  // B,C,H,W (zero where a feature took part in no anchor's pair).
  m.def(
      "multi_range_contrastive(Tensor features, Tensor depth, Tensor shifts, float r_p, float[] range_lo, "
      "float[] range_hi, float[] margins, int anchor_start=0, int? anchor_count=None) "
      "-> (Tensor loss, Tensor count, Tensor coef)");
  m.def(
      "_multi_range_contrastive_backward(Tensor grad_loss, Tensor features, Tensor shifts, Tensor coef, "
      "int anchor_start=0) -> Tensor");
}
