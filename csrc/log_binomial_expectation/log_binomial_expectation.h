// Host-side pieces shared by the CPU and CUDA entry points of depthmetric::log_binomial_expectation (inline:
// the CPU and the CUDA kernels are built into separate libraries).
#pragma once

#include <torch/csrc/stable/tensor.h>

#include "common/bin_checks.h"
#include "log_binomial_expectation/log_binomial_expectation_math.h"

namespace depthmetric {
namespace log_binomial_expectation {

using torch::stable::Tensor;

// p B,1,H,W, t B,1,H,W in the accumulation dtype, centers B,K,h,w (K >= 1) of p's dtype, 0 < eps < 1.
inline void check_inputs(const Tensor& p, const Tensor& t, const Tensor& centers, double eps) {
  check_floating(p, "p");
  check_dim(p, 4, "p (B,1,H,W)");
  DM_CHECK(p.size(1) == 1, "p must have one channel, got shape ", shape_str(p.sizes()));
  check_dim(centers, 4, "centers (B,K,h,w)");
  DM_CHECK(centers.size(1) >= 1, "centers must have at least one bin, got shape ", shape_str(centers.sizes()));
  const int64_t B = p.size(0), H = p.size(2), W = p.size(3);
  bin_softmax::check_centres(centers, p, "p", B, centers.size(1));
  bin_softmax::check_pixel_map(t, p, "t", B, H, W);
  DM_CHECK(eps > 0 && eps < 1, "eps must be in (0, 1), got ", eps);
}

// lb(K-1, k) for k < K, computed in float64 and rounded once to acc_t.
template <typename acc_t>
void fill_log_binomial(int64_t K, acc_t* out) {
  for (int64_t k = 0; k < K; ++k) out[k] = static_cast<acc_t>(log_binomial(static_cast<double>(K - 1), static_cast<double>(k)));
}

template <typename scalar_t>
BinomialLogits<scalar_t> source(const Tensor& p, const Tensor& t, const acc_type<scalar_t>* lb, int64_t K, double eps,
                                const Tensor* grad_p = nullptr, const Tensor* grad_t = nullptr) {
  using acc_t = acc_type<scalar_t>;
  BinomialLogits<scalar_t> s{strided_view4<const scalar_t>(p), strided_view4<const acc_t>(t), lb, K,
                             static_cast<acc_t>(eps), {nullptr, 0, 0, 0, 0}, {nullptr, 0, 0, 0, 0}};
  if (grad_p) s.grad_p = bin_softmax::view_or_none<scalar_t>(*grad_p);
  if (grad_t) s.grad_t = bin_softmax::view_or_none<acc_t>(*grad_t);
  return s;
}

}  // namespace log_binomial_expectation
}  // namespace depthmetric
