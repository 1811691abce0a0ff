// CPU kernel of depthmetric::bin_expectation: the bin heads' row loops (common/bin_softmax_cpu.h) over the
// tempered logits.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>

#include <tuple>

#include "bin_expectation/bin_expectation.h"
#include "common/bin_softmax_cpu.h"
#include "bin_expectation/cpu/bin_expectation_blocks.h"

namespace depthmetric {
namespace bin_expectation {
namespace {

std::tuple<Tensor, Tensor, Tensor> forward_cpu(const Tensor& logits, const Tensor& centers, const Tensor& temperature,
                                               bool return_probs) {
  check_inputs(logits, centers, temperature);
  const int64_t B = logits.size(0), K = logits.size(1), H = logits.size(2), W = logits.size(3);
  auto [depth, stats, probs] = bin_softmax::allocate_forward(logits, B, K, H, W, return_probs);
  if (depth.numel() == 0) return {depth, stats, probs};
  DM_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "bin_expectation_cpu", [&] {
    bin_softmax::forward_rows<scalar_t>(source<scalar_t>(logits, temperature), strided_view4<const scalar_t>(centers),
                                        B, K, H, W, centers.size(2), centers.size(3), strided_view4<scalar_t>(depth),
                                        strided_view4<acc_type<scalar_t>>(stats),
                                        bin_softmax::view_or_none<scalar_t>(probs));
  });
  return {depth, stats, probs};
}

std::tuple<Tensor, Tensor, Tensor> backward_cpu(const Tensor& grad, const Tensor& logits, const Tensor& centers,
                                                const Tensor& temperature, const Tensor& stats, bool need_logits,
                                                bool need_centers, bool need_temperature) {
  check_inputs(logits, centers, temperature);
  const int64_t B = logits.size(0), K = logits.size(1), H = logits.size(2), W = logits.size(3);
  bin_softmax::check_backward(grad, stats, logits, B, H, W);
  const ScalarType t = logits.scalar_type();
  auto grad_logits = bin_softmax::allocate_gradient(logits, logits.sizes(), t, need_logits, false);
  auto grad_centers = bin_softmax::allocate_gradient(logits, centers.sizes(), t, need_centers);
  auto grad_temperature = bin_softmax::allocate_gradient(logits, temperature.sizes(), accumulate_dtype(t),
                                                         need_temperature);
  if (B * H * W == 0) return {grad_logits, grad_centers, grad_temperature};
  DM_DISPATCH_FLOATING_TYPES(t, "bin_expectation_backward_cpu", [&] {
    using acc_t = acc_type<scalar_t>;
    const auto c = strided_view4<const scalar_t>(centers);
    const auto g = strided_view4<const scalar_t>(grad);
    const auto st = strided_view4<const acc_t>(stats);
    bin_softmax::backward_rows<scalar_t>(source<scalar_t>(logits, temperature, &grad_logits, &grad_temperature), c,
                                         g, st, B, K, H, W, centers.size(2), centers.size(3),
                                         need_logits || need_temperature,
                                         bin_softmax::view_or_none<scalar_t>(grad_centers), kCentreRowBlock);
  });
  return {grad_logits, grad_centers, grad_temperature};
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(depthmetric, CPU, m) {
  m.impl("bin_expectation", TORCH_BOX(&forward_cpu));
  m.impl("_bin_expectation_backward", TORCH_BOX(&backward_cpu));
}

}  // namespace bin_expectation
}  // namespace depthmetric
