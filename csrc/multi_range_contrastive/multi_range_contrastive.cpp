// Schema of depthmetric::multi_range_contrastive.
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY_FRAGMENT(depthmetric, m) {
  m.def(
      "multi_range_contrastive(Tensor features, Tensor depth, Tensor shifts, float r_p, float[] range_lo, "
      "float[] range_hi, float[] margins) -> (Tensor loss, Tensor count, Tensor coef)");
  m.def(
      "_multi_range_contrastive_backward(Tensor grad_loss, Tensor features, Tensor shifts, Tensor coef) "
      "-> Tensor");
}
