// Schema of depthmetric::bin_expectation.
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY_FRAGMENT(depthmetric, m) {
  // AdaBins/SQLdepth's bin head: depth = sum_k softmax_k(logits / temperature) c_k, the centres (B,K,h,w)
  // resampled to H,W as bilinear align_corners=True. stats (2,B,H,W, accumulation dtype) holds each pixel's
  // log-sum-exp and depth for the backward; probs (B,K,H,W) is empty unless return_probs.
  m.def(
      "bin_expectation(Tensor logits, Tensor centers, Tensor temperature, bool return_probs=False) -> "
      "(Tensor depth, Tensor stats, Tensor probs)");
  // A gradient not asked for (need_* false) is neither computed nor allocated: it comes back empty.
  m.def(
      "_bin_expectation_backward(Tensor grad, Tensor logits, Tensor centers, Tensor temperature, Tensor stats, "
      "bool need_logits=True, bool need_centers=True, bool need_temperature=True) -> "
      "(Tensor grad_logits, Tensor grad_centers, Tensor grad_temperature)");
}
