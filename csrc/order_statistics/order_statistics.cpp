// Schema of depthmetric::order_statistics.
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY_FRAGMENT(depthmetric, m) {
  // Masked order statistics per region, by selection (no sort). values, key: B,H,W (one dtype); valid: B,H,W
  // bool; labels: B,H,W int64; boxes: B,R,4 int64 (y0,y1,x0,x1); ranges: B,R,2 float64 ([lo, hi) of key);
  // ids: B,R int64 (< 0: any label). Region (b, r) = valid pixels inside the box, the range and the label.
  // stats B,R,4 (accumulation dtype): median (lower middle), mean |x - median|, trimmed sum of the kept
  // smallest values, the kept count's threshold value; counts B,R,5 int64: n, the median's flat index (lowest
  // among ties, -1 when empty), below/equal the threshold, sum sign(x - median). keep_rule: order_statistics_math.h.
  // with_median false: the median, MAD, median index (-1) and sign sum are left 0 (a trimmed sum alone).
  m.def(
      "order_statistics(Tensor values, Tensor valid, Tensor key, Tensor labels, Tensor boxes, Tensor ranges, "
      "Tensor ids, float trim, int keep_rule, bool with_median) -> (Tensor stats, Tensor counts)");
  // grad_stats B,R,4 (the threshold's slot ignored) -> grad_values B,H,W in values' dtype, gathered per pixel.
  m.def(
      "_order_statistics_backward(Tensor grad_stats, Tensor values, Tensor valid, Tensor key, Tensor labels, "
      "Tensor boxes, Tensor ranges, Tensor ids, float trim, int keep_rule, Tensor stats, Tensor counts) -> Tensor");
}
