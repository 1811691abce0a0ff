// Schema of depthmetric::log_binomial_expectation.
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY_FRAGMENT(depthmetric, m) {
  // ZoeDepth's LogBinomial (p B,1,H,W, temperature t B,1,H,W, K = centers.size(1) bins) followed by the
  // expectation over the centres (B,K,h,w, resampled to H,W as bilinear align_corners=True). stats
  // (2,B,H,W, accumulation dtype) holds each pixel's log-sum-exp and depth; probs is empty unless return_probs.
  m.def(
      "log_binomial_expectation(Tensor p, Tensor t, Tensor centers, float eps, bool return_probs=False) -> "
      "(Tensor depth, Tensor stats, Tensor probs)");
  // A gradient not asked for (need_* false) is neither computed nor allocated: it comes back empty.
  m.def(
      "_log_binomial_expectation_backward(Tensor grad, Tensor p, Tensor t, Tensor centers, Tensor stats, float eps, "
      "bool need_p=True, bool need_t=True, bool need_centers=True) -> "
      "(Tensor grad_p, Tensor grad_t, Tensor grad_centers)");
}
