// CUDA kernels of depthmetric::attractor_shift, grid-stride loops over int64 indices. The forward gives a
// thread one output element (b, k, i, j): it sums the shifts of the A attractors of its pixel (neighbouring
// threads share the attractor lines in L1). The backward gives a thread one pixel: per tile of kTile attractors
// (held in registers, with their gradient accumulators) it runs over the K centres once, adding g_k f' into
// the tile's accumulators and, when one tile holds every attractor (A <= kTile: ZoeDepth's 16, 8, 4, 1), the
// sum over a of f' that grad_c needs, so both gradients come from one evaluation of f'. With more attractors
// grad_c takes a second loop that evaluates f' again (A accumulators per thread would spill). Every element
// is written by one thread, sums run in a fixed order: deterministic, no atomics. Only the inputs are read:
// nothing is saved by the forward.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>

#include <tuple>

#include "attractor_shift/attractor_shift.h"
#include "attractor_shift/attractor_shift_math.h"
#include "common/cuda_launch.cuh"
#include "common/tensor_views.h"

namespace depthmetric {
namespace attractor_shift {
namespace {

constexpr int kTile = 16;  // attractors whose gradient accumulators a backward thread keeps in registers

// Registers at sm_90 (ptxas -v): the forward is compiled for 4 resident blocks (at most 64 registers, 50%
// occupancy); without that bound ptxas gave the 16-bit inv kernels 32 registers and spilled around the
// division's slow path. The backward holds a tile of 16 attractors and their 16 gradient accumulators per
// thread: 73-80 registers in float (3 blocks, 37.5%), 112-126 in float64 (2 blocks, 25%); a smaller tile
// would run the K centres once more per tile for ZoeDepth's 16 attractors, where the tile is what makes
// the one-pass gather possible.

template <typename scalar_t, typename acc_t, int64_t K, int G>
__global__ void __launch_bounds__(kThreadsPerBlock, 4) forward_kernel(StridedView4<const scalar_t> cv,
                                                                   StridedView4<const scalar_t> av, acc_t* out,
                                                                   int64_t NK, int64_t A, int64_t H, int64_t W,
                                                                   int64_t n, acc_t alpha, int64_t gamma, bool mean) {
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < n;
       p += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t j = p % W, i = (p / W) % H, k = (p / (W * H)) % NK, b = p / (W * H * NK);
    const acc_t c = static_cast<acc_t>(cv(b, k, i, j));
    acc_t sum = 0;
    for (int64_t a = 0; a < A; ++a) sum += shift<K, G>(static_cast<acc_t>(av(b, a, i, j)) - c, alpha, gamma);
    out[p] = mean ? c + sum / static_cast<acc_t>(A) : c + sum;
  }
}

template <typename scalar_t, typename acc_t, int64_t K, int G>
__global__ void __launch_bounds__(kThreadsPerBlock) backward_kernel(
    StridedView4<const acc_t> gv, StridedView4<const scalar_t> cv, StridedView4<const scalar_t> av,
    scalar_t* grad_c, scalar_t* grad_a, int64_t NK, int64_t A, int64_t H, int64_t W, int64_t n, acc_t alpha,
    acc_t ag, int64_t gamma, acc_t s) {
  const bool one_tile = A >= 1 && A <= kTile;
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < n;
       p += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t j = p % W, i = (p / W) % H, b = p / (W * H);
    for (int64_t a0 = 0; a0 < A; a0 += kTile) {
      acc_t at[kTile], acc[kTile];
#pragma unroll
      for (int t = 0; t < kTile; ++t) {
        at[t] = a0 + t < A ? static_cast<acc_t>(av(b, a0 + t, i, j)) : acc_t(0);
        acc[t] = 0;
      }
      for (int64_t k = 0; k < NK; ++k) {
        const acc_t c = static_cast<acc_t>(cv(b, k, i, j)), g = gv(b, k, i, j);
        acc_t fsum = 0;
#pragma unroll
        for (int t = 0; t < kTile; ++t) {
          if (a0 + t < A) {
            const acc_t fp = slope<K, G>(at[t] - c, alpha, ag, gamma);
            fsum += fp;
            acc[t] += g * fp;
          }
        }
        if (one_tile) grad_c[((b * NK + k) * H + i) * W + j] = static_cast<scalar_t>(g * (acc_t(1) - s * fsum));
      }
#pragma unroll
      for (int t = 0; t < kTile; ++t) {
        if (a0 + t < A) grad_a[((b * A + a0 + t) * H + i) * W + j] = static_cast<scalar_t>(s * acc[t]);
      }
    }
    if (!one_tile) {  // more attractors than a tile, or none (a sum over no attractor: grad_c = g)
      for (int64_t k = 0; k < NK; ++k) {
        const acc_t c = static_cast<acc_t>(cv(b, k, i, j)), g = gv(b, k, i, j);
        acc_t fsum = 0;
        for (int64_t a = 0; a < A; ++a) fsum += slope<K, G>(static_cast<acc_t>(av(b, a, i, j)) - c, alpha, ag, gamma);
        grad_c[((b * NK + k) * H + i) * W + j] = static_cast<scalar_t>(g * (acc_t(1) - s * fsum));
      }
    }
  }
}

Tensor forward_cuda(const Tensor& centers, const Tensor& attractors, double alpha, int64_t gamma, int64_t kind,
                    bool mean) {
  check_inputs(centers, attractors, alpha, gamma, kind, mean);
  const CudaDeviceGuard guard(centers);
  auto out = allocate_output(centers);
  const int64_t n = out.numel();
  if (n == 0) return out;
  const int64_t NK = centers.size(1), H = centers.size(2), W = centers.size(3), A = attractors.size(1);
  DM_DISPATCH_FLOATING_TYPES(centers.scalar_type(), "attractor_shift_cuda", [&] {
    using acc_t = acc_type<scalar_t>;
    with_attractor(kind, gamma, [&](auto k, auto g) {
      DM_LAUNCH((forward_kernel<scalar_t, acc_t, decltype(k)::value, decltype(g)::value>), grid_for(n),
                dim3(kThreadsPerBlock), strided_view4<const scalar_t>(centers),
                strided_view4<const scalar_t>(attractors), data_of<acc_t>(out), NK, A, H, W, n,
                static_cast<acc_t>(alpha), gamma, mean);
    });
  });
  return out;
}

std::tuple<Tensor, Tensor> backward_cuda(const Tensor& grad, const Tensor& centers, const Tensor& attractors,
                                         double alpha, int64_t gamma, int64_t kind, bool mean) {
  check_backward(grad, centers, attractors, alpha, gamma, kind, mean);
  const CudaDeviceGuard guard(centers);
  auto [grad_c, grad_a] = allocate_gradients(centers, attractors);
  if (centers.numel() == 0) return {grad_c, torch::stable::fill_(grad_a, 0.0)};  // no centre: no shift to pull
  const int64_t NK = centers.size(1), H = centers.size(2), W = centers.size(3), A = attractors.size(1);
  const int64_t n = centers.size(0) * H * W;
  DM_DISPATCH_FLOATING_TYPES(centers.scalar_type(), "attractor_shift_backward_cuda", [&] {
    using acc_t = acc_type<scalar_t>;
    const acc_t a = static_cast<acc_t>(alpha);
    const acc_t s = mean ? acc_t(1) / static_cast<acc_t>(A) : acc_t(1);
    with_attractor(kind, gamma, [&](auto k, auto g) {
      // grad is read through its strides (from a mean it is an expanded scalar).
      DM_LAUNCH((backward_kernel<scalar_t, acc_t, decltype(k)::value, decltype(g)::value>), grid_for(n),
                dim3(kThreadsPerBlock), strided_view4<const acc_t>(grad), strided_view4<const scalar_t>(centers),
                strided_view4<const scalar_t>(attractors), data_of<scalar_t>(grad_c), data_of<scalar_t>(grad_a),
                NK, A, H, W, n, a, a * static_cast<acc_t>(gamma), gamma, s);
    });
  });
  return {grad_c, grad_a};
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(depthmetric, CUDA, m) {
  m.impl("attractor_shift", TORCH_BOX(&forward_cuda));
  m.impl("_attractor_shift_backward", TORCH_BOX(&backward_cuda));
}

}  // namespace attractor_shift
}  // namespace depthmetric
