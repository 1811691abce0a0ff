// CPU kernel of depthmetric::log_binomial_expectation: the bin heads' row loops (common/bin_softmax_cpu.h)
// over ZoeDepth's log-binomial logits, computed from p and t as the rows are visited (never stored).
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>

#include <tuple>
#include <vector>

#include "common/bin_softmax_cpu.h"
#include "log_binomial_expectation/cpu/log_binomial_expectation_blocks.h"
#include "log_binomial_expectation/log_binomial_expectation.h"

namespace depthmetric {
namespace log_binomial_expectation {
namespace {

std::tuple<Tensor, Tensor, Tensor> forward_cpu(const Tensor& p, const Tensor& t, const Tensor& centers, double eps,
                                               bool return_probs) {
  check_inputs(p, t, centers, eps);
  const int64_t B = p.size(0), K = centers.size(1), H = p.size(2), W = p.size(3);
  auto [depth, stats, probs] = bin_softmax::allocate_forward(p, B, K, H, W, return_probs);
  if (depth.numel() == 0) return {depth, stats, probs};
  DM_DISPATCH_FLOATING_TYPES(p.scalar_type(), "log_binomial_expectation_cpu", [&] {
    using acc_t = acc_type<scalar_t>;
    std::vector<acc_t> lb(K);
    fill_log_binomial(K, lb.data());
    bin_softmax::forward_rows<scalar_t>(source<scalar_t>(p, t, lb.data(), K, eps),
                                        strided_view4<const scalar_t>(centers), B, K, H, W, centers.size(2),
                                        centers.size(3), strided_view4<scalar_t>(depth), strided_view4<acc_t>(stats),
                                        bin_softmax::view_or_none<scalar_t>(probs));
  });
  return {depth, stats, probs};
}

std::tuple<Tensor, Tensor, Tensor> backward_cpu(const Tensor& grad, const Tensor& p, const Tensor& t,
                                                const Tensor& centers, const Tensor& stats, double eps, bool need_p,
                                                bool need_t, bool need_centers) {
  check_inputs(p, t, centers, eps);
  const int64_t B = p.size(0), K = centers.size(1), H = p.size(2), W = p.size(3);
  bin_softmax::check_backward(grad, stats, p, B, H, W);
  const ScalarType type = p.scalar_type();
  auto grad_p = bin_softmax::allocate_gradient(p, p.sizes(), type, need_p);
  auto grad_t = bin_softmax::allocate_gradient(p, t.sizes(), accumulate_dtype(type), need_t);
  auto grad_centers = bin_softmax::allocate_gradient(p, centers.sizes(), type, need_centers);
  if (B * H * W == 0) return {grad_p, grad_t, grad_centers};
  DM_DISPATCH_FLOATING_TYPES(type, "log_binomial_expectation_backward_cpu", [&] {
    using acc_t = acc_type<scalar_t>;
    std::vector<acc_t> lb(K);
    fill_log_binomial(K, lb.data());
    const auto c = strided_view4<const scalar_t>(centers);
    const auto g = strided_view4<const scalar_t>(grad);
    const auto st = strided_view4<const acc_t>(stats);
    bin_softmax::backward_rows<scalar_t>(source<scalar_t>(p, t, lb.data(), K, eps, &grad_p, &grad_t), c, g, st, B, K, H, W,
                                         centers.size(2), centers.size(3), need_p || need_t,
                                         bin_softmax::view_or_none<scalar_t>(grad_centers), kCentreRowBlock);
  });
  return {grad_p, grad_t, grad_centers};
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(depthmetric, CPU, m) {
  m.impl("log_binomial_expectation", TORCH_BOX(&forward_cpu));
  m.impl("_log_binomial_expectation_backward", TORCH_BOX(&backward_cpu));
}

}  // namespace log_binomial_expectation
}  // namespace depthmetric
