// CPU kernel of depthmetric::depth_metric_sums. Work is split over the rows of every image's window; each
// row writes its own partial sums, which are then added per image in row order, so the result does not
// depend on the number of threads.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>

#include <vector>

#include "common/tensor_views.h"
#include "depth_metric_sums/depth_metric_sums.h"
#include "depth_metric_sums/metric_math.h"

namespace depthmetric {
namespace dms {
namespace {

template <typename scalar_t>
void sums_rows(const Tensor& pred, const Tensor& gt, const std::optional<Tensor>& mask, const double* scale,
               double min_depth, double max_depth, bool closed, const Window& w, Tensor& out) {
  using acc_t = acc_type<scalar_t>;
  const auto p = strided_view4<const scalar_t>(pred);
  const auto g = strided_view4<const scalar_t>(gt);
  const StridedView4<const bool> mv = mask.has_value() ? strided_view4<const bool>(*mask)
                                                       : StridedView4<const bool>{nullptr, 0, 0, 0, 0};
  const int64_t B = pred.size(0), R = w.rows();
  const acc_t lo = static_cast<acc_t>(min_depth), hi = static_cast<acc_t>(max_depth);
  std::vector<Sums> rows(B * R);
  torch::stable::parallel_for(0, B * R, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / R, h = w.r0 + row % R;
      const acc_t s = scale ? static_cast<acc_t>(scale[b]) : acc_t(1);
      Sums acc;
      acc.zero();
      for (int64_t c = w.c0; c < w.c1; ++c) {
        if (mv.data && !mv(b, 0, h, c)) continue;
        const acc_t pv = static_cast<acc_t>(p(b, 0, h, c)) * s;
        add_pixel<acc_t>(pv, static_cast<acc_t>(g(b, 0, h, c)), lo, hi, closed, acc);
      }
      rows[row] = acc;
    }
  });
  double* o = data_of<double>(out);
  for (int64_t b = 0; b < B; ++b) {
    Sums total;
    total.zero();
    for (int64_t r = 0; r < R; ++r) total.add(rows[b * R + r]);
    for (int k = 0; k < kNumSums; ++k) o[b * kNumSums + k] = total.v[k];
  }
}

Tensor sums_cpu(const Tensor& pred, const Tensor& gt, const std::optional<Tensor>& mask,
                const std::optional<Tensor>& scale, double min_depth, double max_depth,
                const std::vector<int64_t>& window, bool closed) {
  const Window w = check_inputs(pred, gt, mask, scale, min_depth, max_depth, window);
  auto out = zeros(pred, {pred.size(0), kNumSums}, ScalarType::Double);
  const auto scale_c = scale.has_value() ? std::optional<Tensor>(torch::stable::contiguous(*scale)) : std::nullopt;
  DM_DISPATCH_FLOATING_TYPES(pred.scalar_type(), "depth_metric_sums_cpu", [&] {
    sums_rows<scalar_t>(pred, gt, mask, scale_c ? data_of<const double>(*scale_c) : nullptr, min_depth, max_depth,
                        closed, w, out);
  });
  return out;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(depthmetric, CPU, m) { m.impl("depth_metric_sums", TORCH_BOX(&sums_cpu)); }

}  // namespace dms
}  // namespace depthmetric
