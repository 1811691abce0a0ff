// CPU kernels of depthmetric::order_statistics. A task is one region (b, r): its member values are copied
// into a scratch buffer (acc_t) and std::nth_element selects the lower median (sorted index (n - 1) / 2) and,
// for the trimmed sum, the keep-th smallest value (the threshold); passes over the region then give the MAD,
// the median's lowest flat index among ties, the counts below/at the threshold and the trimmed sum
// sum(v < thr) + (keep - below) * thr. No sort, nothing of size B x R x H x W. The backward gives a task one
// image: its R regions' gradients are gathered into one acc_t buffer in region order (deterministic at any
// thread count, no atomics).
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

#include "common/tensor_views.h"
#include "order_statistics/order_statistics.h"
#include "order_statistics/order_statistics_math.h"

namespace depthmetric {
namespace order_statistics {
namespace {

template <typename scalar_t>
void forward_regions(const Tensor& values, const Tensor& valid, const Tensor& key, const Tensor& labels,
                     const Tensor& boxes, const Tensor& ranges, const Tensor& ids, double trim, int64_t keep_rule,
                     bool with_median, Tensor& stats, Tensor& counts) {
  using acc_t = acc_type<scalar_t>;
  const int64_t B = boxes.size(0), R = boxes.size(1), H = values.size(1), W = values.size(2);
  const auto in = inputs_of<scalar_t>(values, valid, key, labels);
  const int64_t* bx = data_of<const int64_t>(boxes);
  const double* rg = data_of<const double>(ranges);
  const int64_t* id = data_of<const int64_t>(ids);
  acc_t* st = data_of<acc_t>(stats);
  int64_t* ct = data_of<int64_t>(counts);
  torch::stable::parallel_for(0, B * R, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buf;
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b = t / R;
      const Region reg = region_of(bx, rg, id, t, H, W);
      buf.clear();
      buf.reserve(std::max<int64_t>(0, (reg.y1 - reg.y0) * (reg.x1 - reg.x0)));
      for (int64_t i = reg.y0; i < reg.y1; ++i)
        for (int64_t j = reg.x0; j < reg.x1; ++j)
          if (member(in, reg, b, i, j)) buf.push_back(value_at<acc_t>(in, b, i, j));
      const int64_t n = static_cast<int64_t>(buf.size());
      acc_t* s = st + t * kNumStats;
      int64_t* c = ct + t * kNumCounts;
      for (int64_t k = 0; k < kNumStats; ++k) s[k] = acc_t(0);
      for (int64_t k = 0; k < kNumCounts; ++k) c[k] = 0;
      c[kMedianIndex] = -1;
      if (n == 0) continue;
      c[kCount] = n;
      if (with_median) {
        const int64_t q = (n - 1) / 2;
        std::nth_element(buf.begin(), buf.begin() + q, buf.end());
        const acc_t med = buf[q];
        // MAD and the sign sum over the scratch copy (contiguous); the median's index: the first member equal
        // to it in flat order (a scan that stops there).
        acc_t mad = 0;
        int64_t sign_sum = 0;
        for (int64_t k = 0; k < n; ++k) {
          mad += abs_of(buf[k] - med);
          sign_sum += (buf[k] > med) - (buf[k] < med);
        }
        int64_t first = -1;
        for (int64_t i = reg.y0; i < reg.y1 && first < 0; ++i)
          for (int64_t j = reg.x0; j < reg.x1; ++j)
            if (member(in, reg, b, i, j) && value_at<acc_t>(in, b, i, j) == med) {
              first = i * W + j;
              break;
            }
        s[kMedian] = med;
        s[kMad] = mad / static_cast<acc_t>(n);
        c[kMedianIndex] = first;
        c[kSignSum] = sign_sum;
      }
      const int64_t keep = kept_count(n, trim, keep_rule);
      if (keep == 0) continue;
      std::nth_element(buf.begin(), buf.begin() + (keep - 1), buf.end());
      const acc_t thr = buf[keep - 1];
      acc_t below_sum = 0;
      int64_t below = 0, equal = 0;
      for (int64_t k = 0; k < n; ++k) {
        const acc_t v = buf[k];
        below_sum += v < thr ? v : acc_t(0);
        below += v < thr;
        equal += v == thr;
      }
      s[kTrimmed] = below_sum + static_cast<acc_t>(keep - below) * thr;
      s[kThreshold] = thr;
      c[kBelow] = below;
      c[kEqual] = equal;
    }
  });
}

template <typename scalar_t>
void backward_images(const Tensor& grad, const Tensor& values, const Tensor& valid, const Tensor& key,
                     const Tensor& labels, const Tensor& boxes, const Tensor& ranges, const Tensor& ids, double trim,
                     int64_t keep_rule, const Tensor& stats, const Tensor& counts, Tensor& grad_values) {
  using acc_t = acc_type<scalar_t>;
  const int64_t B = boxes.size(0), R = boxes.size(1), H = values.size(1), W = values.size(2);
  const auto in = inputs_of<scalar_t>(values, valid, key, labels);
  const int64_t* bx = data_of<const int64_t>(boxes);
  const double* rg = data_of<const double>(ranges);
  const int64_t* id = data_of<const int64_t>(ids);
  const acc_t* st = data_of<const acc_t>(stats);
  const int64_t* ct = data_of<const int64_t>(counts);
  const auto gv = StridedView4<const acc_t>{data_of<const acc_t>(grad), grad.stride(0), grad.stride(1), 0,
                                            grad.stride(2)};
  scalar_t* out = data_of<scalar_t>(grad_values);
  torch::stable::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(H * W);
    for (int64_t b = begin; b < end; ++b) {
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t r = 0; r < R; ++r) {
        const int64_t t = b * R + r;
        const acc_t* s = st + t * kNumStats;
        const int64_t* c = ct + t * kNumCounts;
        const int64_t n = c[kCount];
        if (n == 0) continue;
        const Region reg = region_of(bx, rg, id, t, H, W);
        const acc_t g_med = gv(b, r, 0, kMedian), g_mad = gv(b, r, 0, kMad), g_trim = gv(b, r, 0, kTrimmed);
        const acc_t inv_n = acc_t(1) / static_cast<acc_t>(n), med = s[kMedian], thr = s[kThreshold];
        const int64_t keep = kept_count(n, trim, keep_rule);
        for (int64_t i = reg.y0; i < reg.y1; ++i)
          for (int64_t j = reg.x0; j < reg.x1; ++j) {
            if (!member(in, reg, b, i, j)) continue;
            const acc_t v = value_at<acc_t>(in, b, i, j);
            acc[i * W + j] += g_mad * sign_of(v - med) * inv_n +
                              g_trim * trimmed_weight(v, thr, keep, c[kBelow], c[kEqual]);
          }
        if (c[kMedianIndex] >= 0) acc[c[kMedianIndex]] += g_med - g_mad * static_cast<acc_t>(c[kSignSum]) * inv_n;
      }
      scalar_t* dst = out + b * H * W;
      for (int64_t p = 0; p < H * W; ++p) dst[p] = static_cast<scalar_t>(acc[p]);
    }
  });
}

std::tuple<Tensor, Tensor> forward_cpu(const Tensor& values, const Tensor& valid, const Tensor& key,
                                       const Tensor& labels, const Tensor& boxes, const Tensor& ranges,
                                       const Tensor& ids, double trim, int64_t keep_rule, bool with_median) {
  check_inputs(values, valid, key, labels, boxes, ranges, ids, trim, keep_rule);
  auto [stats, counts] = allocate_outputs(values, boxes);
  if (stats.numel() == 0) return {stats, counts};
  DM_DISPATCH_FLOATING_TYPES(values.scalar_type(), "order_statistics_cpu", [&] {
    forward_regions<scalar_t>(values, valid, key, labels, boxes, ranges, ids, trim, keep_rule, with_median, stats,
                              counts);
  });
  return {stats, counts};
}

Tensor backward_cpu(const Tensor& grad, const Tensor& values, const Tensor& valid, const Tensor& key,
                    const Tensor& labels, const Tensor& boxes, const Tensor& ranges, const Tensor& ids, double trim,
                    int64_t keep_rule, const Tensor& stats, const Tensor& counts) {
  check_backward(grad, values, valid, key, labels, boxes, ranges, ids, trim, keep_rule, stats, counts);
  auto grad_values = empty(values, {values.size(0), values.size(1), values.size(2)}, values.scalar_type());
  if (grad_values.numel() == 0) return grad_values;
  DM_DISPATCH_FLOATING_TYPES(values.scalar_type(), "order_statistics_backward_cpu", [&] {
    backward_images<scalar_t>(grad, values, valid, key, labels, boxes, ranges, ids, trim, keep_rule, stats, counts,
                              grad_values);
  });
  return grad_values;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(depthmetric, CPU, m) {
  m.impl("order_statistics", TORCH_BOX(&forward_cpu));
  m.impl("_order_statistics_backward", TORCH_BOX(&backward_cpu));
}

}  // namespace order_statistics
}  // namespace depthmetric
