// Schema of depthmetric::depth_metric_sums: per-image sums of every evaluation
// metric term in one read of the prediction and the ground truth.
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY_FRAGMENT(depthmetric, m) {
  // closed: count min_depth <= gt <= max_depth instead of the strict min_depth < gt < max_depth.
  m.def(
      "depth_metric_sums(Tensor pred, Tensor gt, Tensor? mask, Tensor? scale, float min_depth, float max_depth, "
      "int[] window, bool closed=False) -> Tensor");
}
