// CUDA kernels of depthmetric::log_binomial_expectation: the bin heads' kernels (common/bin_softmax_cuda.cuh)
// over ZoeDepth's log-binomial logits, computed from p and t in the threads (never stored), after a
// one-launch kernel fills the K values of lb(K-1, k).
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>

#include <tuple>

#include "common/bin_softmax_cuda.cuh"
#include "log_binomial_expectation/log_binomial_expectation.h"

namespace depthmetric {
namespace log_binomial_expectation {
namespace {

using bin_softmax::Axis;
using bin_softmax::make_axis;

template <typename acc_t>
__global__ void log_binomial_table_kernel(int64_t K, acc_t* __restrict__ lb) {
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < K;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    lb[k] = static_cast<acc_t>(log_binomial(static_cast<double>(K - 1), static_cast<double>(k)));
  }
}

// lb(K-1, k) for k < K on the device (float64 arithmetic, rounded once to the accumulation dtype).
Tensor log_binomial_table(const Tensor& like, int64_t K) {
  auto lb = empty(like, {K}, accumulate_dtype(like.scalar_type()));
  DM_DISPATCH_FLOATING_TYPES(like.scalar_type(), "log_binomial_table_cuda", [&] {
    using acc_t = acc_type<scalar_t>;
    DM_LAUNCH(log_binomial_table_kernel<acc_t>, grid_for(K), kThreadsPerBlock, K, data_of<acc_t>(lb));
  });
  return lb;
}

std::tuple<Tensor, Tensor, Tensor> forward_cuda(const Tensor& p, const Tensor& t, const Tensor& centers, double eps,
                                                bool return_probs) {
  check_inputs(p, t, centers, eps);
  const CudaDeviceGuard guard(p);
  const int64_t B = p.size(0), K = centers.size(1), H = p.size(2), W = p.size(3);
  auto [depth, stats, probs] = bin_softmax::allocate_forward(p, B, K, H, W, return_probs);
  const int64_t n = B * H * W;
  if (n == 0) return {depth, stats, probs};
  const Tensor lb = log_binomial_table(p, K);
  DM_DISPATCH_FLOATING_TYPES(p.scalar_type(), "log_binomial_expectation_cuda", [&] {
    using acc_t = acc_type<scalar_t>;
    DM_LAUNCH(bin_softmax::forward_kernel<BinomialLogits<scalar_t>>, grid_for(n), kThreadsPerBlock,
              source<scalar_t>(p, t, data_of<const acc_t>(lb), K, eps), strided_view4<const scalar_t>(centers), K, H,
              W, n, make_axis<acc_t>(centers.size(2), H), make_axis<acc_t>(centers.size(3), W),
              strided_view4<scalar_t>(depth), strided_view4<acc_t>(stats), bin_softmax::view_or_none<scalar_t>(probs));
  });
  return {depth, stats, probs};
}

std::tuple<Tensor, Tensor, Tensor> backward_cuda(const Tensor& grad, const Tensor& p, const Tensor& t,
                                                 const Tensor& centers, const Tensor& stats, double eps, bool need_p,
                                                 bool need_t, bool need_centers) {
  check_inputs(p, t, centers, eps);
  const CudaDeviceGuard guard(p);
  const int64_t B = p.size(0), K = centers.size(1), H = p.size(2), W = p.size(3);
  bin_softmax::check_backward(grad, stats, p, B, H, W);
  const ScalarType type = p.scalar_type();
  auto grad_p = bin_softmax::allocate_gradient(p, p.sizes(), type, need_p);
  auto grad_t = bin_softmax::allocate_gradient(p, t.sizes(), accumulate_dtype(type), need_t);
  auto grad_centers = bin_softmax::allocate_gradient(p, centers.sizes(), type, need_centers);
  const int64_t n = B * H * W, h = centers.size(2), w = centers.size(3), n_cells = B * K * h * w;
  if (n == 0) return {grad_p, grad_t, grad_centers};
  const Tensor lb = log_binomial_table(p, K);
  DM_DISPATCH_FLOATING_TYPES(type, "log_binomial_expectation_backward_cuda", [&] {
    using acc_t = acc_type<scalar_t>;
    const Axis<acc_t> ay = make_axis<acc_t>(h, H), ax = make_axis<acc_t>(w, W);
    const auto g = strided_view4<const scalar_t>(grad);
    const auto st = strided_view4<const acc_t>(stats);
    const acc_t* table = data_of<const acc_t>(lb);
    if (need_p || need_t) {
      DM_LAUNCH(bin_softmax::backward_kernel<BinomialLogits<scalar_t>>, grid_for(n), kThreadsPerBlock,
                source<scalar_t>(p, t, table, K, eps, &grad_p, &grad_t), strided_view4<const scalar_t>(centers), g, st,
                K, H, W, n, ay, ax);
    }
    if (need_centers) {
      DM_LAUNCH(bin_softmax::centre_gradient_kernel<BinomialLogits<scalar_t>>, bin_softmax::cell_grid(n_cells),
                bin_softmax::kGatherThreads, source<scalar_t>(p, t, table, K, eps), g, st, K, h, w, n_cells, ay, ax,
                strided_view4<scalar_t>(grad_centers));
    }
  });
  return {grad_p, grad_t, grad_centers};
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(depthmetric, CUDA, m) {
  m.impl("log_binomial_expectation", TORCH_BOX(&forward_cuda));
  m.impl("_log_binomial_expectation_backward", TORCH_BOX(&backward_cuda));
}

}  // namespace log_binomial_expectation
}  // namespace depthmetric
