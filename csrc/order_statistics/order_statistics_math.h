// Per-element pieces of depthmetric::order_statistics shared by the CPU and CUDA kernels: region membership,
// the order-preserving integer key of a float (the CUDA select bisects on it), the slots of the outputs and
// the kept count of a trim.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "common/dispatch.h"
#include "common/strided_view.h"

namespace depthmetric {
namespace order_statistics {

// stats (B,R,kNumStats) in the accumulation dtype; counts (B,R,kNumCounts) int64.
enum Stat : int64_t { kMedian = 0, kMad = 1, kTrimmed = 2, kThreshold = 3, kNumStats = 4 };
enum Count : int64_t { kCount = 0, kMedianIndex = 1, kBelow = 2, kEqual = 3, kSignSum = 4, kNumCounts = 5 };

// keep_rule 0: drop floor(trim n) (Depth Pro, "n - floor(trim n)"); 1: keep floor((1 - trim) n) (MiDaS's
// int(len * (1 - trim))). Clamped to [0, n].
DM_HOST_DEVICE int64_t kept_count(int64_t n, double trim, int64_t keep_rule) {
  const double nd = static_cast<double>(n);
  int64_t keep = keep_rule == 0 ? n - static_cast<int64_t>(floor(nd * trim)) : static_cast<int64_t>(floor(nd * (1.0 - trim)));
  return keep < 0 ? 0 : (keep > n ? n : keep);
}

// One region of one image: a box [y0, y1) x [x0, x1) (already clipped to the image), a half-open interval
// [lo, hi) of the key map, and a label id (< 0: any label); every member pixel is also valid.
struct Region {
  int64_t y0, y1, x0, x1;
  double lo, hi;
  int64_t id;
};

DM_HOST_DEVICE int64_t clip_to(int64_t v, int64_t hi) { return v < 0 ? int64_t(0) : (v > hi ? hi : v); }

// Region (b, r) from the contiguous boxes/ranges/ids, its box clipped to the H x W image (an empty box: y1 <= y0).
DM_HOST_DEVICE Region region_of(const int64_t* boxes, const double* ranges, const int64_t* ids, int64_t t, int64_t H,
                                int64_t W) {
  const int64_t* bx = boxes + 4 * t;
  return {clip_to(bx[0], H), clip_to(bx[1], H), clip_to(bx[2], W), clip_to(bx[3], W), ranges[2 * t], ranges[2 * t + 1], ids[t]};
}

template <typename scalar_t, typename index_t = int64_t>
struct Inputs {
  StridedView4<const scalar_t, index_t> values, key;
  StridedView4<const bool, index_t> valid;
  StridedView4<const int64_t, index_t> labels;
};

template <typename scalar_t, typename index_t>
DM_HOST_DEVICE bool member(const Inputs<scalar_t, index_t>& in, const Region& r, int64_t b, int64_t i, int64_t j) {
  if (!in.valid(b, 0, i, j)) return false;
  if (r.lo != -INFINITY || r.hi != INFINITY) {  // the key is read only for a bounded range
    const double k = static_cast<double>(in.key(b, 0, i, j));
    if (!(r.lo <= k && k < r.hi)) return false;
  }
  return r.id < 0 || in.labels(b, 0, i, j) == r.id;
}

// The value of a pixel in acc_t, -0 made +0 (so equal values have equal keys).
template <typename acc_t, typename scalar_t, typename index_t>
DM_HOST_DEVICE acc_t value_at(const Inputs<scalar_t, index_t>& in, int64_t b, int64_t i, int64_t j) {
  return static_cast<acc_t>(in.values(b, 0, i, j)) + acc_t(0);
}

// Order-preserving unsigned keys: a < b (finite, no -0) iff key(a) < key(b).
DM_HOST_DEVICE uint32_t ordered_key(float v) {
  uint32_t u;
#ifdef __CUDA_ARCH__
  u = __float_as_uint(v);
#else
  std::memcpy(&u, &v, sizeof u);
#endif
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
DM_HOST_DEVICE uint64_t ordered_key(double v) {
  uint64_t u;
#ifdef __CUDA_ARCH__
  u = static_cast<uint64_t>(__double_as_longlong(v));
#else
  std::memcpy(&u, &v, sizeof u);
#endif
  return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
}
DM_HOST_DEVICE float value_of_key(uint32_t k) {
  const uint32_t u = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float v;
  std::memcpy(&v, &u, sizeof v);
  return v;
#endif
}
DM_HOST_DEVICE double value_of_key(uint64_t k) {
  const uint64_t u = (k & 0x8000000000000000ull) ? (k & 0x7fffffffffffffffull) : ~k;
#ifdef __CUDA_ARCH__
  return __longlong_as_double(static_cast<long long>(u));
#else
  double v;
  std::memcpy(&v, &u, sizeof v);
  return v;
#endif
}

template <typename acc_t>
struct KeyType {
  using type = uint32_t;
};
template <>
struct KeyType<double> {
  using type = uint64_t;
};

// The gradient weight of a pixel of value v in a region's trimmed sum of the keep smallest: 1 below the
// threshold, the kept share of the ties at it (keep - below) / equal, 0 above.
template <typename acc_t>
DM_HOST_DEVICE acc_t trimmed_weight(acc_t v, acc_t threshold, int64_t keep, int64_t below, int64_t equal) {
  if (keep <= 0) return acc_t(0);
  if (v < threshold) return acc_t(1);
  if (v == threshold && equal > 0) return static_cast<acc_t>(keep - below) / static_cast<acc_t>(equal);
  return acc_t(0);
}

template <typename acc_t>
DM_HOST_DEVICE acc_t abs_of(acc_t d) {
  return d < acc_t(0) ? -d : d;
}

template <typename acc_t>
DM_HOST_DEVICE acc_t sign_of(acc_t d) {
  return static_cast<acc_t>((d > acc_t(0)) - (d < acc_t(0)));
}

}  // namespace order_statistics
}  // namespace depthmetric
