// Per-pixel math of the evaluation metrics, shared by the CPU and CUDA kernels of depthmetric::depth_metric_sums.
// Column order matches depthmetric/reference/depth_metric_sums.py SUMS.
#pragma once

#include <cfloat>
#include <cstdint>
#include <cstring>

#include "common/dispatch.h"

namespace depthmetric {
namespace depth_metric_sums {

constexpr int kNumSums = 10;
enum Column { kCount, kAbsRel, kSqRel, kSqErr, kLogErr, kLogErrSq, kAbsLogErr, kDelta1, kDelta2, kDelta3 };

// The bits of x as a To of the same size: memcpy, well defined on the host and the device alike, compiles to a
// register move.
template <typename To, typename From>
DM_HOST_DEVICE To bit_cast(From x) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast between types of different sizes");
  To y;
  memcpy(&y, &x, sizeof y);
  return y;
}

// log x for x >= 0, not NaN (the pixels that count), without branches: glibc's logf is a call per pixel,
// which GCC vectorises only through libmvec under -ffast-math, and those calls were ~40 % of the CPU pass over
// dense ground truth. x = 2^k m with m in [sqrt(1/2), sqrt(2)] (subnormals scaled by 2^25 first), f = m - 1
// (exact), s = f / (2 + f), and log m = 2 atanh(s) = 2 s + s R = f - h + s (h + R) with h = f^2 / 2,
// R = 2 (z/3 + z^2/5 + ... + z^5/11), z = s^2 <= 0.0295 (the next term is below 1e-10 relative): the
// division's rounding only reaches the small s (h + R). Within 0.84 ulp of log over every float >= 0
// (benchmarks/results/NOTES_cpu.md); 0 gives -inf, inf gives inf, x == 1 gives 0. Integer masks, not float
// selects, which GCC does not if-convert here.
DM_HOST_DEVICE float dm_log(float x) {
  const uint32_t sub = x < FLT_MIN;
  const uint32_t b = bit_cast<uint32_t>(x * bit_cast<float>(0x3f800000u + sub * (25u << 23)));
  const uint32_t mb = (b & 0x007fffffu) | 0x3f800000u;  // m in [1, 2)
  const uint32_t big = mb > 0x3fb504f3u;                // m > sqrt(2): halve it
  const float f = bit_cast<float>(mb - (big << 23)) - 1.f;
  const float k = static_cast<float>(static_cast<int32_t>(b >> 23) - 127 - 25 * static_cast<int32_t>(sub) +
                                     static_cast<int32_t>(big));
  const float s = f / (2.f + f), z = s * s, h = 0.5f * f * f;
  const float r = z * (2.f / 3 + z * (2.f / 5 + z * (2.f / 7 + z * (2.f / 9 + z * (2.f / 11)))));
  // Small parts first, k hi (exact: hi has 12 trailing zero bits) last, where it cancels exactly for k = +-1.
  const float y = k * 0.693115234375f + (f - (h - (s * (h + r) + k * 3.194618329871446e-05f)));  // ln 2 = hi + lo
  const uint32_t inf = 0u - static_cast<uint32_t>(x > FLT_MAX), zero = 0u - static_cast<uint32_t>(x == 0.f);
  return bit_cast<float>((bit_cast<uint32_t>(y) & ~(inf | zero)) | (0x7f800000u & inf) | (0xff800000u & zero));
}
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

// p (already scaled) clamped to [lo, hi] as the standard evaluation code does. A NaN p fails both
// comparisons and stays NaN, so it does not count.
template <typename acc_t>
DM_HOST_DEVICE acc_t clamp_pred(acc_t p, acc_t lo, acc_t hi) {
  return p < lo ? lo : (p > hi ? hi : p);
}

// Whether a pixel counts: g valid and in (lo, hi), strictly as Monodepth2, BTS and ZoeDepth count it, or in
// [lo, hi] when closed, and the clamped p valid. Bitwise operators, no branches.
template <typename acc_t>
DM_HOST_DEVICE bool counts(acc_t p, acc_t g, acc_t lo, acc_t hi, bool closed) {
  const bool in_range = ((g > lo) | (closed & (g == lo))) & ((g < hi) | (closed & (g == hi)));
  return is_valid_depth(g) & in_range & is_valid_depth(p);
}

// A counted pixel's terms before the log. Selects, no branches: the CPU computes a run of counted pixels in
// one vectorised loop and their logs in another.
template <typename acc_t>
struct PixelTerms {
  acc_t abs_rel, sq_rel, sq_err;
  acc_t q;      // p / g, whose log is the log error
  acc_t ratio;  // max(p/g, g/p)
};

template <typename acc_t>
DM_HOST_DEVICE PixelTerms<acc_t> pixel_terms(acc_t p, acc_t g) {
  const acc_t d = p - g, q = p / g;  // divisions, not a reciprocal: p == g must give exactly q == 1
  const acc_t abs_d = d < acc_t(0) ? -d : d;
  return {abs_d / g, d * d / g, d * d, q, q > acc_t(1) ? q : g / p};
}

// A counted pixel's ten addends to the sums, in Column order, from its terms and err = log q (log p - log g
// with one log).
template <typename acc_t>
DM_HOST_DEVICE void addends(const PixelTerms<acc_t>& t, acc_t err, acc_t (&a)[kNumSums]) {
  a[kCount] = acc_t(1);
  a[kAbsRel] = t.abs_rel;
  a[kSqRel] = t.sq_rel;
  a[kSqErr] = t.sq_err;
  a[kLogErr] = err;
  a[kLogErrSq] = err * err;
  a[kAbsLogErr] = err < acc_t(0) ? -err : err;
  a[kDelta1] = t.ratio < acc_t(1.25) ? acc_t(1) : acc_t(0);
  a[kDelta2] = t.ratio < acc_t(1.5625) ? acc_t(1) : acc_t(0);    // 1.25^2, exact in binary
  a[kDelta3] = t.ratio < acc_t(1.953125) ? acc_t(1) : acc_t(0);  // 1.25^3, exact in binary
}

template <typename acc_t>
DM_HOST_DEVICE void add_pixel(acc_t p, acc_t g, acc_t lo, acc_t hi, bool closed, Sums& s) {
  p = clamp_pred(p, lo, hi);
  if (!counts(p, g, lo, hi, closed)) return;
  const PixelTerms<acc_t> t = pixel_terms(p, g);
  acc_t a[kNumSums];
  addends(t, dm_log(t.q), a);
  for (int k = 0; k < kNumSums; ++k) s.v[k] += static_cast<double>(a[k]);
}

}  // namespace depth_metric_sums
}  // namespace depthmetric
