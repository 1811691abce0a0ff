// The logit source of depthmetric::log_binomial_expectation: ZoeDepth's LogBinomial,
//   l_k = (lb(K-1, k) + k log(clamp(p, eps, 1)) + (K-1-k) log(clamp(1-p, eps, 1))) / t,
// with ZoeDepth's Stirling form lb(n, k) = n' log n' - k' log k' - (n'-k') log(n'-k'+1e-7), n' = n + 1e-7,
// k' = k + 1e-7 (a table of K values, computed in float64). The softmax-expectation is common/bin_softmax.h.
// Gradients as autograd gives them through torch.clamp, which passes the gradient where min <= x <= max
// (inclusive): at p == 1 the clamp of p passes and that of 1 - p blocks, at p == 0 the reverse.
#pragma once

#include "common/bin_softmax.h"

namespace depthmetric {
namespace log_binomial_expectation {

DM_HOST_DEVICE double log_binomial(double n, double k) {
  const double e = 1e-7, np = n + e, kp = k + e;
  return np * ::log(np) - kp * ::log(kp) - (np - kp) * ::log(np - kp + e);
}

// The clamped logs of one pixel and their derivatives in p (0 where the clamp blocks the gradient).
template <typename acc_t>
struct ClampedLogs {
  acc_t lp, lq, dp, dq;  // log clamp(p), log clamp(1-p), [eps <= p <= 1] / clamp(p), [eps <= 1-p <= 1] / clamp(1-p)
};

template <typename acc_t>
DM_HOST_DEVICE ClampedLogs<acc_t> clamped_logs(acc_t p, acc_t eps) {
  const acc_t q = acc_t(1) - p;
  const acc_t pc = p < eps ? eps : (p > acc_t(1) ? acc_t(1) : p), qc = q < eps ? eps : (q > acc_t(1) ? acc_t(1) : q);
  const bool pass_p = p >= eps && p <= acc_t(1), pass_q = q >= eps && q <= acc_t(1);
  return {bin_softmax::bin_log(pc), bin_softmax::bin_log(qc), pass_p ? acc_t(1) / pc : acc_t(0),
          pass_q ? acc_t(1) / qc : acc_t(0)};
}

template <typename acc_t>
DM_HOST_DEVICE acc_t binomial_logit(acc_t lb_k, int64_t k, int64_t K, acc_t lp, acc_t lq, acc_t inv_t) {
  return (lb_k + static_cast<acc_t>(k) * lp + static_cast<acc_t>(K - 1 - k) * lq) * inv_t;
}

template <typename scalar_t>
struct BinomialLogits {
  using scalar_type = scalar_t;
  using acc_t = acc_type<scalar_t>;
  static constexpr int kTerms = 3;  // CPU row terms: log clamp(p), log clamp(1-p), 1/t
  StridedView4<const scalar_t> p;   // B,1,H,W
  StridedView4<const acc_t> t;      // B,1,H,W
  const acc_t* lb;                  // lb(K-1, k), K values
  int64_t K;
  acc_t eps;
  // Backward outputs (data null: not wanted, or the forward): dL/dp, dL/dt (B,1,H,W).
  StridedView4<scalar_t> grad_p;
  StridedView4<acc_t> grad_t;

  struct Pixel {
    int64_t b, y, x;
    acc_t lp, lq, inv_t;
  };
  DM_HOST_DEVICE Pixel pixel(int64_t b, int64_t y, int64_t x) const {
    const ClampedLogs<acc_t> cl = clamped_logs(static_cast<acc_t>(p(b, 0, y, x)), eps);
    return {b, y, x, cl.lp, cl.lq, acc_t(1) / t(b, 0, y, x)};
  }
  DM_HOST_DEVICE acc_t logit(const Pixel& px, int64_t k) const {
    return binomial_logit(lb[k], k, K, px.lp, px.lq, px.inv_t);
  }
  DM_HOST_DEVICE void grad_bin(const Pixel&, int64_t, acc_t) const {}
  // dL/dp = (1/t) sum_k d_k (k dp - (K-1-k) dq) = (1/t) (dp d1 - dq ((K-1) d0 - d1)); dL/dt = -(1/t) sum_k d_k l_k.
  DM_HOST_DEVICE void write_pixel(int64_t b, int64_t y, int64_t x, acc_t inv_t, acc_t d0, acc_t d1, acc_t dy) const {
    if (grad_p.data != nullptr) {
      const ClampedLogs<acc_t> cl = clamped_logs(static_cast<acc_t>(p(b, 0, y, x)), eps);
      grad_p(b, 0, y, x) =
          static_cast<scalar_t>(inv_t * (cl.dp * d1 - cl.dq * (static_cast<acc_t>(K - 1) * d0 - d1)));
    }
    if (grad_t.data != nullptr) grad_t(b, 0, y, x) = -dy * inv_t;
  }
  DM_HOST_DEVICE void grad_pixel(const Pixel& px, int64_t, acc_t d0, acc_t d1, acc_t dy) const {
    write_pixel(px.b, px.y, px.x, px.inv_t, d0, d1, dy);
  }

  // CPU rows (common/bin_softmax_cpu.h).
  void prepare_row(int64_t b, int64_t y, int64_t W, acc_t* __restrict__ terms) const {
    for (int64_t x = 0; x < W; ++x) {
      const ClampedLogs<acc_t> cl = clamped_logs(static_cast<acc_t>(p(b, 0, y, x)), eps);
      terms[x] = cl.lp;
      terms[W + x] = cl.lq;
      terms[2 * W + x] = acc_t(1) / t(b, 0, y, x);
    }
  }
  void logit_row(int64_t, int64_t, int64_t k, int64_t W, const acc_t* __restrict__ terms,
                 acc_t* __restrict__ l) const {
    const acc_t *__restrict__ lp = terms, *__restrict__ lq = terms + W, *__restrict__ inv_t = terms + 2 * W;
    const acc_t lb_k = lb[k];
    for (int64_t x = 0; x < W; ++x) l[x] = binomial_logit(lb_k, k, K, lp[x], lq[x], inv_t[x]);
  }
  void grad_bin_row(int64_t, int64_t, int64_t, int64_t, const acc_t*, const acc_t*) const {}
  void grad_pixel_row(int64_t b, int64_t y, int64_t, int64_t W, const acc_t* __restrict__ terms,
                      const acc_t* __restrict__ d0, const acc_t* __restrict__ d1, const acc_t* __restrict__ dy) const {
    for (int64_t x = 0; x < W; ++x) write_pixel(b, y, x, terms[2 * W + x], d0[x], d1[x], dy[x]);
  }
};

}  // namespace log_binomial_expectation
}  // namespace depthmetric
