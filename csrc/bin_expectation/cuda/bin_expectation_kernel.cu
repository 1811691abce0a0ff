// CUDA kernels of depthmetric::bin_expectation: the bin heads' kernels (common/bin_softmax_cuda.cuh) over the
// tempered logits.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>

#include <tuple>

#include "bin_expectation/bin_expectation.h"
#include "common/bin_softmax_cuda.cuh"

namespace depthmetric {
namespace bin_expectation {
namespace {

using bin_softmax::Axis;
using bin_softmax::make_axis;

std::tuple<Tensor, Tensor, Tensor> forward_cuda(const Tensor& logits, const Tensor& centers,
                                                const Tensor& temperature, bool return_probs) {
  check_inputs(logits, centers, temperature);
  const CudaDeviceGuard guard(logits);
  const int64_t B = logits.size(0), K = logits.size(1), H = logits.size(2), W = logits.size(3);
  auto [depth, stats, probs] = bin_softmax::allocate_forward(logits, B, K, H, W, return_probs);
  const int64_t n = B * H * W;
  if (n == 0) return {depth, stats, probs};
  DM_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "bin_expectation_cuda", [&] {
    using acc_t = acc_type<scalar_t>;
    DM_LAUNCH(bin_softmax::forward_kernel<TemperedLogits<scalar_t>>, grid_for(n), kThreadsPerBlock,
              source<scalar_t>(logits, temperature), strided_view4<const scalar_t>(centers), K, H, W, n,
              make_axis<acc_t>(centers.size(2), H), make_axis<acc_t>(centers.size(3), W),
              strided_view4<scalar_t>(depth), strided_view4<acc_t>(stats), bin_softmax::view_or_none<scalar_t>(probs));
  });
  return {depth, stats, probs};
}

std::tuple<Tensor, Tensor, Tensor> backward_cuda(const Tensor& grad, const Tensor& logits, const Tensor& centers,
                                                 const Tensor& temperature, const Tensor& stats, bool need_logits,
                                                 bool need_centers, bool need_temperature) {
  check_inputs(logits, centers, temperature);
  const CudaDeviceGuard guard(logits);
  const int64_t B = logits.size(0), K = logits.size(1), H = logits.size(2), W = logits.size(3);
  bin_softmax::check_backward(grad, stats, logits, B, H, W);
  const ScalarType t = logits.scalar_type();
  auto grad_logits = bin_softmax::allocate_gradient(logits, logits.sizes(), t, need_logits, false);
  auto grad_centers = bin_softmax::allocate_gradient(logits, centers.sizes(), t, need_centers);
  auto grad_temperature = bin_softmax::allocate_gradient(logits, temperature.sizes(), accumulate_dtype(t),
                                                         need_temperature);
  const int64_t n = B * H * W, h = centers.size(2), w = centers.size(3), n_cells = B * K * h * w;
  if (n == 0) return {grad_logits, grad_centers, grad_temperature};
  DM_DISPATCH_FLOATING_TYPES(t, "bin_expectation_backward_cuda", [&] {
    using acc_t = acc_type<scalar_t>;
    const Axis<acc_t> ay = make_axis<acc_t>(h, H), ax = make_axis<acc_t>(w, W);
    const auto g = strided_view4<const scalar_t>(grad);
    const auto st = strided_view4<const acc_t>(stats);
    if (need_logits || need_temperature) {
      DM_LAUNCH(bin_softmax::backward_kernel<TemperedLogits<scalar_t>>, grid_for(n), kThreadsPerBlock,
                source<scalar_t>(logits, temperature, &grad_logits, &grad_temperature),
                strided_view4<const scalar_t>(centers), g, st, K, H, W, n, ay, ax);
    }
    if (need_centers) {
      DM_LAUNCH(bin_softmax::centre_gradient_kernel<TemperedLogits<scalar_t>>,
                bin_softmax::cell_grid(n_cells), bin_softmax::kGatherThreads, source<scalar_t>(logits, temperature),
                g, st, K, h, w, n_cells, ay, ax, strided_view4<scalar_t>(grad_centers));
    }
  });
  return {grad_logits, grad_centers, grad_temperature};
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(depthmetric, CUDA, m) {
  m.impl("bin_expectation", TORCH_BOX(&forward_cuda));
  m.impl("_bin_expectation_backward", TORCH_BOX(&backward_cuda));
}

}  // namespace bin_expectation
}  // namespace depthmetric
