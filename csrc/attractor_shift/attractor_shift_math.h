// Per-element math of ZoeDepth's attractor update, shared by the CPU and CUDA kernels of
// depthmetric::attractor_shift: the shift f(dx) an attractor a exerts on a bin centre c (dx = a - c) and its
// slope f'(dx), as autograd gives it through ZoeDepth's formula.
//
//   inv: f = dx / (1 + alpha dx^gamma)        f' = (1 - alpha gamma dx^gamma / D) / D,  D = 1 + alpha dx^gamma
//   exp: f = exp(-alpha |dx|^gamma) dx        f' = E (1 - alpha gamma |dx|^gamma),        E = exp(-alpha |dx|^gamma)
//
// dx^gamma is torch.pow with an integer exponent (a negative dx keeps its sign for odd gamma). The exp slope
// is autograd's E + dx E (-alpha) gamma |dx|^(gamma-1) sign(dx): abs's gradient is 0 at dx == 0, where the
// second term vanishes, and dx sign(dx) |dx|^(gamma-1) = |dx|^gamma elsewhere, so f'(0) = 1 for every gamma.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "common/dispatch.h"

namespace depthmetric {
namespace attractor_shift {

// The kind argument of the schema.
constexpr int64_t kInv = 0, kExp = 1;

// x^n for an integer n >= 1 by repeated squaring: x*x for 2 and x*(x*x) for 3, the products torch.pow takes.
// G > 0: the exponent known at compile time (the loop unrolls); G == 0: n at run time.
template <int G, typename acc_t>
DM_HOST_DEVICE acc_t ipow(acc_t x, int64_t n) {
  if (G > 0) n = G;
  acc_t r = (n & 1) ? x : acc_t(1);
  for (n >>= 1; n > 0; n >>= 1) {
    x *= x;
    if (n & 1) r *= x;
  }
  return r;
}

DM_HOST_DEVICE float dm_abs(float x) { return ::fabsf(x); }
DM_HOST_DEVICE double dm_abs(double x) { return ::fabs(x); }
DM_HOST_DEVICE float dm_exp(float x) { return ::expf(x); }
DM_HOST_DEVICE double dm_exp(double x) { return ::exp(x); }

// f(dx) of kind K with exponent G (0: gamma at run time).
template <int64_t K, int G, typename acc_t>
DM_HOST_DEVICE acc_t shift(acc_t dx, acc_t alpha, int64_t gamma) {
  if (K == kInv) return dx / (acc_t(1) + alpha * ipow<G>(dx, gamma));
  return dm_exp(-alpha * ipow<G>(dm_abs(dx), gamma)) * dx;
}

// f'(dx) of kind K with exponent G (0: gamma at run time); ag = alpha * gamma.
template <int64_t K, int G, typename acc_t>
DM_HOST_DEVICE acc_t slope(acc_t dx, acc_t alpha, acc_t ag, int64_t gamma) {
  if (K == kInv) {
    const acc_t p = ipow<G>(dx, gamma);
    const acc_t r = acc_t(1) / (acc_t(1) + alpha * p);
    return r * (acc_t(1) - ag * p * r);
  }
  const acc_t q = ipow<G>(dm_abs(dx), gamma);
  return dm_exp(-alpha * q) * (acc_t(1) - ag * q);
}

// Calls body(kind constant, gamma constant): the kinds, and gamma 1, 2 and 3 at compile time (0: any other
// gamma, read at run time), so the per-element loops inline f and f' without branches.
template <typename Body>
void with_attractor(int64_t kind, int64_t gamma, Body&& body) {
  const auto with_gamma = [&](auto k) {
    switch (gamma) {
      case 1: return body(k, std::integral_constant<int, 1>{});
      case 2: return body(k, std::integral_constant<int, 2>{});
      case 3: return body(k, std::integral_constant<int, 3>{});
      default: return body(k, std::integral_constant<int, 0>{});
    }
  };
  if (kind == kInv) return with_gamma(std::integral_constant<int64_t, kInv>{});
  return with_gamma(std::integral_constant<int64_t, kExp>{});
}

}  // namespace attractor_shift
}  // namespace depthmetric
