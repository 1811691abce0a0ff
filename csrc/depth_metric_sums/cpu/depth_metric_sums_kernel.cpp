// CPU kernel of depthmetric::depth_metric_sums. Work is split over the rows of every image's window; each
// row writes its own partial sums, which are then added per image in row order, so the result does not
// depend on the number of threads.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <vector>

#include "common/tensor_views.h"
#include "depth_metric_sums/cpu/depth_metric_sums_blocks.h"
#include "depth_metric_sums/depth_metric_sums.h"
#include "depth_metric_sums/metric_math.h"

namespace depthmetric {
namespace depth_metric_sums {
namespace {

// kChunk, the pixels per pass of the addends, is a compile-time column stride in their buffer, so that GCC
// sees that the ten columns' stores cannot overlap (with a runtime stride it needed more than 10 alias checks
// and gave up); a multiple of kLanes, so pixel j of a run goes to lane j % kLanes whatever the pass.

// A row's clamped predictions and whether each pixel counts (1 or 0), vectorised: the compaction that
// follows is then a scalar loop of moves and integer adds only.
template <typename acc_t>
void counts_run(const acc_t* __restrict__ p, const acc_t* __restrict__ g, int64_t n, acc_t lo, acc_t hi, bool closed,
                acc_t* __restrict__ p_clamped, int32_t* __restrict__ counted) {
  for (int64_t i = 0; i < n; ++i) {
    p_clamped[i] = clamp_pred(p[i], lo, hi);
    counted[i] = counts(p_clamped[i], g[i], lo, hi, closed);
  }
}

// The terms of a run of counted pixels, one array per term (restrict pointers and no array of structs, so
// that GCC vectorises).
template <typename acc_t>
void terms_run(const acc_t* __restrict__ p, const acc_t* __restrict__ g, int64_t n, acc_t* __restrict__ abs_rel,
               acc_t* __restrict__ sq_rel, acc_t* __restrict__ sq_err, acc_t* __restrict__ q,
               acc_t* __restrict__ ratio) {
  for (int64_t i = 0; i < n; ++i) {
    const PixelTerms<acc_t> t = pixel_terms(p[i], g[i]);
    abs_rel[i] = t.abs_rel;
    sq_rel[i] = t.sq_rel;
    sq_err[i] = t.sq_err;
    q[i] = t.q;
    ratio[i] = t.ratio;
  }
}

// The addends of up to kChunk counted pixels, one array per sum (a[k * kChunk + i]: sum k, pixel i).
template <typename acc_t>
void addends_run(const acc_t* __restrict__ abs_rel, const acc_t* __restrict__ sq_rel,
                 const acc_t* __restrict__ sq_err, const acc_t* __restrict__ ratio, const acc_t* __restrict__ err,
                 int64_t n, acc_t* __restrict__ a) {
  for (int64_t i = 0; i < n; ++i) {
    const PixelTerms<acc_t> t{abs_rel[i], sq_rel[i], sq_err[i], acc_t(1), ratio[i]};
    acc_t pixel[kNumSums];
    addends(t, err[i], pixel);
    for (int k = 0; k < kNumSums; ++k) a[k * kChunk + i] = pixel[k];
  }
}

// x[0..n) added in double, element i into lane i % kLanes: independent additions that vectorise, in a fixed
// order (the lanes are added in order at the end of the row).
template <typename acc_t>
void lane_add(const acc_t* __restrict__ x, int64_t n, double* __restrict__ lanes) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) lanes[j] += static_cast<double>(x[i + j]);
  }
  for (; i < n; ++i) lanes[i % kLanes] += static_cast<double>(x[i]);
}

// A row's sums: its counted pixels are first compacted into a run (without branches, while the row is read),
// then the run goes through four loops: the terms (vectorised), the logs (vectorised for float), the addends
// (vectorised) and their sums. Sparse ground truth (KITTI: ~15 % counted) skips the rest of the row; one
// branchy loop over the whole pixel had an unpredictable branch and no vector code.
template <typename acc_t>
struct RowPass {
  enum { kRowP, kRowG, kClamped, kP, kG, kAbsRel, kSqRel, kSqErr, kQ, kRatio, kErr, kAddends };
  int64_t n;
  std::vector<acc_t> buffer;
  std::vector<int32_t> counted;
  explicit RowPass(int64_t cols) : n(cols), buffer(kAddends * cols + kNumSums * kChunk), counted(cols) {}
  acc_t* at(int k) { return buffer.data() + k * n; }

  // The row read into at(kRowP) (scaled) and at(kRowG) (masked).
  Sums run(acc_t lo, acc_t hi, bool closed) {
    counts_run(at(kRowP), at(kRowG), n, lo, hi, closed, at(kClamped), counted.data());
    const acc_t *pc = at(kClamped), *gr = at(kRowG);
    acc_t *p = at(kP), *g = at(kG);
    int64_t m = 0;
    for (int64_t i = 0; i < n; ++i) {
      p[m] = pc[i];
      g[m] = gr[i];
      m += counted[i];
    }
    terms_run(at(kP), at(kG), m, at(kAbsRel), at(kSqRel), at(kSqErr), at(kQ), at(kRatio));
    const acc_t* q = at(kQ);
    acc_t* err = at(kErr);
    for (int64_t i = 0; i < m; ++i) err[i] = dm_log(q[i]);
    acc_t* a = at(kAddends);
    double lanes[kNumSums][kLanes] = {};
    for (int64_t i = 0; i < m; i += kChunk) {
      const int64_t len = std::min(kChunk, m - i);
      addends_run(at(kAbsRel) + i, at(kSqRel) + i, at(kSqErr) + i, at(kRatio) + i, err + i, len, a);
      for (int k = 0; k < kNumSums; ++k) lane_add(a + k * kChunk, len, lanes[k]);
    }
    Sums s;
    for (int k = 0; k < kNumSums; ++k) {
      s.v[k] = lanes[k][0];
      for (int j = 1; j < kLanes; ++j) s.v[k] += lanes[k][j];
    }
    return s;
  }
};

template <typename scalar_t>
void sums_rows(const Tensor& pred, const Tensor& gt, const std::optional<Tensor>& mask, const double* scale,
               double min_depth, double max_depth, bool closed, const Window& w, Tensor& out) {
  using acc_t = acc_type<scalar_t>;
  const auto p = strided_view4<const scalar_t>(pred);
  const auto g = strided_view4<const scalar_t>(gt);
  const StridedView4<const bool> mv = mask.has_value() ? strided_view4<const bool>(*mask)
                                                       : StridedView4<const bool>{nullptr, 0, 0, 0, 0};
  const int64_t B = pred.size(0), R = w.rows(), n = w.cols();
  const acc_t lo = static_cast<acc_t>(min_depth), hi = static_cast<acc_t>(max_depth);
  std::vector<Sums> rows(B * R);
  torch::stable::parallel_for(0, B * R, 1, [&](int64_t begin, int64_t end) {
    RowPass<acc_t> pass(n);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / R, h = w.r0 + row % R;
      const acc_t s = scale ? static_cast<acc_t>(scale[b]) : acc_t(1);
      acc_t *pv = pass.at(pass.kRowP), *gv = pass.at(pass.kRowG);
      for (int64_t i = 0; i < n; ++i) {
        pv[i] = static_cast<acc_t>(p(b, 0, h, w.c0 + i)) * s;
        gv[i] = static_cast<acc_t>(g(b, 0, h, w.c0 + i));
      }
      if (mv.data) {  // a masked-out pixel as an invalid ground truth
        for (int64_t i = 0; i < n; ++i) gv[i] = mv(b, 0, h, w.c0 + i) ? gv[i] : acc_t(0);
      }
      rows[row] = pass.run(lo, hi, closed);
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

}  // namespace depth_metric_sums
}  // namespace depthmetric
