// Per-pixel math of the evaluation metrics (SPEC section 4), shared by the CPU and CUDA kernels of
// depthmetric::depth_metric_sums. Column order matches depthmetric/reference/depth_metric_sums.py SUMS.
#pragma once

#include "common/macros.h"

namespace depthmetric {
namespace dms {

constexpr int kNumSums = 10;
enum Column { kCount, kAbsRel, kSqRel, kSqErr, kLogErr, kLogErrSq, kAbsLogErr, kDelta1, kDelta2, kDelta3 };

DM_HOST_DEVICE float dm_log(float x) { return ::logf(x); }
DM_HOST_DEVICE double dm_log(double x) { return ::log(x); }

// Per-image running sums. Each term is computed in acc_t and accumulated in double: metric sums run over
// millions of pixels, and a double accumulator costs nothing in a pass bound by memory.
struct Sums {
  double v[kNumSums];
  DM_HOST_DEVICE void zero() {
    for (int k = 0; k < kNumSums; ++k) v[k] = 0.0;
  }
  DM_HOST_DEVICE void add(const Sums& o) {
    for (int k = 0; k < kNumSums; ++k) v[k] += o.v[k];
  }
};

// Adds pixel (p, g) when it counts: g valid and in (lo, hi), strictly as Monodepth2, BTS and ZoeDepth count
// it (SPEC section 4), or in [lo, hi] when closed; p (already scaled) clamped to [lo, hi] as the standard
// evaluation code does, then valid. A NaN p fails both clamp comparisons and stays invalid.
template <typename acc_t>
DM_HOST_DEVICE void add_pixel(acc_t p, acc_t g, acc_t lo, acc_t hi, bool closed, Sums& s) {
  const bool in_range = closed ? (g >= lo && g <= hi) : (g > lo && g < hi);
  if (!(is_valid_depth(g) && in_range)) return;
  p = p < lo ? lo : (p > hi ? hi : p);
  if (!is_valid_depth(p)) return;
  const acc_t d = p - g, q = p / g;  // divisions, not a reciprocal: p == g must give exactly q == 1
  const acc_t err = dm_log(q);      // log p - log g with one log
  const acc_t ratio = q > acc_t(1) ? q : g / p;  // max(p/g, g/p)
  const acc_t abs_d = d < acc_t(0) ? -d : d;
  s.v[kCount] += 1.0;
  s.v[kAbsRel] += static_cast<double>(abs_d / g);
  s.v[kSqRel] += static_cast<double>(d * d / g);
  s.v[kSqErr] += static_cast<double>(d * d);
  s.v[kLogErr] += static_cast<double>(err);
  s.v[kLogErrSq] += static_cast<double>(err * err);
  s.v[kAbsLogErr] += static_cast<double>(err < acc_t(0) ? -err : err);
  s.v[kDelta1] += ratio < acc_t(1.25) ? 1.0 : 0.0;
  s.v[kDelta2] += ratio < acc_t(1.5625) ? 1.0 : 0.0;    // 1.25^2, exact in binary
  s.v[kDelta3] += ratio < acc_t(1.953125) ? 1.0 : 0.0;  // 1.25^3, exact in binary
}

}  // namespace dms
}  // namespace depthmetric
