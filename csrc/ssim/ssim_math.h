// SSIM math shared by the CPU and CUDA kernels of depthmetric::ssim and depthmetric::min_reprojection: the
// windows, how a window tap maps to an input index under each padding, the SSIM of one set of window moments
// and its derivative with respect to those moments.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/check.h"
#include "common/dispatch.h"

namespace depthmetric {
namespace ssim {

// Codes shared with depthmetric/ssim.py (WINDOWS, PADDINGS).
enum WindowKind : int64_t { kBox3 = 0, kGauss11 = 1 };
enum Padding : int64_t { kReflect = 0, kSame = 1, kValid = 2 };

constexpr int kMaxRadius = 5;  // gauss11

// A separable window: the same 1-d weights on both axes, taps -radius..radius. Passed to kernels by value.
template <typename acc_t>
struct Window {
  int radius;
  acc_t w[2 * kMaxRadius + 1];

  DM_HOST_DEVICE acc_t tap(int64_t d) const {  // weight of offset d, 0 outside the window
    return (d < -radius || d > radius) ? acc_t(0) : w[d + radius];
  }
};

// box3: 1/3 per axis (Monodepth2's 3x3 average pool); gauss11: exp(-k^2 / (2 * 1.5^2)) normalised, as
// pytorch-msssim and fused-ssim build their 11x11 window (outer product of this 1-d kernel).
template <typename acc_t>
Window<acc_t> make_window(int64_t kind) {
  DM_CHECK(kind == kBox3 || kind == kGauss11, "window must be 0 (box3) or 1 (gauss11), got ", kind);
  Window<acc_t> win{};
  if (kind == kBox3) {
    win.radius = 1;
    for (int k = 0; k < 3; ++k) win.w[k] = acc_t(1.0 / 3.0);
    return win;
  }
  win.radius = kMaxRadius;
  double g[2 * kMaxRadius + 1], sum = 0;
  for (int k = -kMaxRadius; k <= kMaxRadius; ++k) sum += g[k + kMaxRadius] = std::exp(-k * k / (2.0 * 1.5 * 1.5));
  for (int k = 0; k < 2 * kMaxRadius + 1; ++k) win.w[k] = static_cast<acc_t>(g[k] / sum);
  return win;
}

// The geometry of one axis: n input samples, n_out outputs; output p centres its window on input p + offset
// (offset = radius for "valid", 0 otherwise). Taps outside [0, n) reflect (nn.ReflectionPad2d: -k -> k,
// n-1+k -> n-1-k; needs radius < n) or read zero ("same").
struct Axis {
  int64_t n, n_out, offset;
  bool reflect;

  // Input index read by tap position t (= p + offset + d), or -1 for a zero-padded tap (and for positions
  // beyond one reflection, which no output reads but a tile's halo may cover).
  DM_HOST_DEVICE int64_t source(int64_t t) const {
    if (t >= 0 && t < n) return t;
    if (!reflect) return -1;
    const int64_t m = t < 0 ? -t : 2 * (n - 1) - t;
    return m >= 0 && m < n ? m : -1;
  }

  // Total weight with which output p's window reads input q: the direct tap plus, under reflection, the
  // tap mirrored onto q from either edge. This is exactly what autograd through ReflectionPad2d sums.
  template <typename acc_t>
  DM_HOST_DEVICE acc_t weight(const Window<acc_t>& win, int64_t p, int64_t q) const {
    const int64_t c = p + offset;
    acc_t w = win.tap(q - c);
    if (reflect) {
      if (q > 0) w += win.tap(-q - c);
      if (q < n - 1) w += win.tap(2 * (n - 1) - q - c);
    }
    return w;
  }

  // Outputs whose window can touch input q lie in [q - offset - radius, q - offset + radius].
  DM_HOST_DEVICE int64_t first_output(int64_t q, int radius) const {
    const int64_t p = q - offset - radius;
    return p < 0 ? 0 : p;
  }
  DM_HOST_DEVICE int64_t last_output(int64_t q, int radius) const {  // inclusive
    const int64_t p = q - offset + radius;
    return p > n_out - 1 ? n_out - 1 : p;
  }
};

inline Axis make_axis(int64_t n, int64_t padding, int radius) {
  DM_CHECK(padding == kReflect || padding == kSame || padding == kValid,
           "padding must be 0 (reflect), 1 (same) or 2 (valid), got ", padding);
  if (padding == kReflect) {
    DM_CHECK(n > radius, "reflect padding needs every spatial size > ", radius, ", got ", n);
  }
  if (padding == kValid) {
    DM_CHECK(n > 2 * radius, "valid padding needs every spatial size > ", 2 * radius, ", got ", n);
    return {n, n - 2 * radius, radius, false};
  }
  return {n, n, 0, padding == kReflect};
}

constexpr double kC1 = 0.01 * 0.01;
constexpr double kC2 = 0.03 * 0.03;

// Window means of x, y, x^2, y^2 and xy at one output pixel.
template <typename acc_t>
struct Moments {
  acc_t mx, my, xx, yy, xy;
};

// SSIM and its derivatives with respect to the moments. With the variances written as E[x^2] - mu^2
// (Monodepth2), d/dE[x^2] = d/dE[y^2], so four partials give the gradient in both images:
//   dS/dx(q) = sum_p W(p,q) (d_mx(p) + 2 d_sq(p) x(q) + d_xy(p) y(q)), and symmetrically for y.
template <typename acc_t>
struct SsimTerms {
  acc_t ssim, d_mx, d_my, d_sq, d_xy;
};

template <typename acc_t>
DM_HOST_DEVICE SsimTerms<acc_t> ssim_terms(const Moments<acc_t>& m) {
  const acc_t c1 = static_cast<acc_t>(kC1), c2 = static_cast<acc_t>(kC2);
  const acc_t l_num = acc_t(2) * m.mx * m.my + c1;
  const acc_t l_den = m.mx * m.mx + m.my * m.my + c1;
  const acc_t s_num = acc_t(2) * (m.xy - m.mx * m.my) + c2;
  const acc_t s_den = (m.xx - m.mx * m.mx) + (m.yy - m.my * m.my) + c2;
  const acc_t inv = acc_t(1) / (l_den * s_den);
  const acc_t s = l_num * s_num * inv;
  // Through mu directly, and through the variances' -mu^2 and the covariance's -mu_x mu_y terms.
  const acc_t cross = acc_t(2) * inv * (s_num - l_num);
  const acc_t self = acc_t(2) * s * (acc_t(1) / s_den - acc_t(1) / l_den);
  return {s, cross * m.my + self * m.mx, cross * m.mx + self * m.my, -s / s_den, acc_t(2) * l_num * inv};
}

// Monodepth2's per-channel photometric SSIM term clamp((1 - S) / 2, 0, 1) and its slope dterm/dS (-1/2
// where the clamp is inactive, endpoints included as torch.clamp's gradient does, else 0).
template <typename acc_t>
struct DssimTerm {
  acc_t value, slope;
};

template <typename acc_t>
DM_HOST_DEVICE DssimTerm<acc_t> dssim(acc_t s) {
  const acc_t v = (acc_t(1) - s) * acc_t(0.5);
  const bool inside = v >= acc_t(0) && v <= acc_t(1);
  return {v < acc_t(0) ? acc_t(0) : (v > acc_t(1) ? acc_t(1) : v), inside ? acc_t(-0.5) : acc_t(0)};
}

}  // namespace ssim
}  // namespace depthmetric
