// The CUDA kernels of the bin heads (bin_expectation, log_binomial_expectation), written once over a logit
// Source (common/bin_softmax.h): a thread per output pixel for the forward and the backward's per-pixel
// pass, and a block per centre cell for the centres' gradient, a gather (no atomics) whose threads sum the
// cell's candidate pixels in a fixed stride and then reduce in a fixed tree, so the result is the same at
// every run.
#pragma once

#include "common/bin_softmax.h"
#include "common/cuda_launch.cuh"

namespace depthmetric {
namespace bin_softmax {

constexpr int kGatherThreads = 128;  // threads per centre cell of the gather

// Registers (ptxas -v, sm_75 ... sm_120, no spills, no stack): the forward and backward keep a pixel's terms,
// both taps of the resampled centres (int64 indices) and the running sums in registers, 60-114 per thread,
// so they run at 25-50% theoretical occupancy; the backward's __launch_bounds__(256, 1) lets ptxas use the
// registers it needs (at sm_120 it capped the float64 instance at 80 and spilled 32 bytes). Each thread
// streams its pixel's K logits (coalesced across the warp) with little reuse for more warps to hide; not
// timed on a GPU yet.
template <typename Source, typename scalar_t = typename Source::scalar_type>
__global__ void __launch_bounds__(kThreadsPerBlock)
    forward_kernel(Source src, StridedView4<const scalar_t> c, int64_t K, int64_t H, int64_t W, int64_t n,
                   Axis<acc_type<scalar_t>> ay, Axis<acc_type<scalar_t>> ax, StridedView4<scalar_t> out,
                   StridedView4<acc_type<scalar_t>> stats, StridedView4<scalar_t> probs) {
  using acc_t = acc_type<scalar_t>;
  for (int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < n;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = p / (H * W), y = (p / W) % H, x = p % W;
    const auto px = src.pixel(b, y, x);
    const Tap<acc_t> ty = tap(ay, y), tx = tap(ax, x);
    const Stats<acc_t> st = pixel_forward(src, px, c, b, K, ty, tx);
    stats(0, b, y, x) = st.lse;
    stats(1, b, y, x) = st.depth;
    out(b, 0, y, x) = static_cast<scalar_t>(st.depth);
    if (probs.data != nullptr) {
      for (int64_t k = 0; k < K; ++k) probs(b, k, y, x) = static_cast<scalar_t>(softmax_exp(src.logit(px, k) - st.lse));
    }
  }
}

template <typename Source, typename scalar_t = typename Source::scalar_type>
__global__ void __launch_bounds__(kThreadsPerBlock, 1)
    backward_kernel(Source src, StridedView4<const scalar_t> c, StridedView4<const scalar_t> grad,
                    StridedView4<const acc_type<scalar_t>> stats, int64_t K, int64_t H, int64_t W, int64_t n,
                    Axis<acc_type<scalar_t>> ay, Axis<acc_type<scalar_t>> ax) {
  using acc_t = acc_type<scalar_t>;
  for (int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < n;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = p / (H * W), y = (p / W) % H, x = p % W;
    pixel_backward(src, src.pixel(b, y, x), c, b, K, tap(ay, y), tap(ax, x), static_cast<acc_t>(grad(b, 0, y, x)),
                   Stats<acc_t>{stats(0, b, y, x), stats(1, b, y, x)});
  }
}

// One block per cell (b, k, i, j) of the centres (grid-stride over the cells): its threads take the
// candidate output pixels (the rectangle of reading_range) in a fixed stride, then a tree reduction.
template <typename Source, typename scalar_t = typename Source::scalar_type>
__global__ void __launch_bounds__(kGatherThreads)
    centre_gradient_kernel(Source src, StridedView4<const scalar_t> grad, StridedView4<const acc_type<scalar_t>> stats,
                           int64_t K, int64_t h, int64_t w, int64_t n_cells, Axis<acc_type<scalar_t>> ay,
                           Axis<acc_type<scalar_t>> ax, StridedView4<scalar_t> grad_centres) {
  using acc_t = acc_type<scalar_t>;
  __shared__ acc_t partial[kGatherThreads];
  for (int64_t cell = blockIdx.x; cell < n_cells; cell += gridDim.x) {
    const int64_t j = cell % w, i = (cell / w) % h, k = (cell / (w * h)) % K, b = cell / (w * h * K);
    int64_t y_lo = 0, y_hi = -1, x_lo = 0, x_hi = -1;
    reading_range(ay, i, y_lo, y_hi);
    reading_range(ax, j, x_lo, x_hi);
    const int64_t cols = x_hi - x_lo + 1, count = (y_hi - y_lo + 1) * cols;
    acc_t sum = 0;
    for (int64_t q = threadIdx.x; q < count; q += blockDim.x) {
      const int64_t y = y_lo + q / cols, x = x_lo + q % cols;
      sum += cell_term(src, b, k, i, j, y, x, ay, ax, static_cast<acc_t>(grad(b, 0, y, x)), stats(0, b, y, x));
    }
    partial[threadIdx.x] = sum;
    __syncthreads();
    for (int half = kGatherThreads / 2; half > 0; half /= 2) {
      if (static_cast<int>(threadIdx.x) < half) partial[threadIdx.x] += partial[threadIdx.x + half];
      __syncthreads();
    }
    if (threadIdx.x == 0) grad_centres(b, k, i, j) = static_cast<scalar_t>(partial[0]);
    __syncthreads();  // partial[0] read before the next cell overwrites it
  }
}

inline dim3 cell_grid(int64_t n_cells) {
  return dim3(static_cast<unsigned>(n_cells < (int64_t{1} << 20) ? n_cells : (int64_t{1} << 20)));
}

}  // namespace bin_softmax
}  // namespace depthmetric
