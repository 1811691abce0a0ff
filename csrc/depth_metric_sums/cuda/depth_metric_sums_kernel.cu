// CUDA kernels of depthmetric::depth_metric_sums. A grid of (chunks, B) blocks: each block strides over
// one image's window (consecutive threads read consecutive columns, so loads coalesce), reduces its ten
// sums in registers, warps and shared memory, and writes them to its own slot; a second kernel adds the
// slots of each image in a fixed order. No atomics: the sums are bitwise reproducible.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>

#include <algorithm>

#include "common/cuda_launch.cuh"
#include "common/tensor_views.h"
#include "depth_metric_sums/depth_metric_sums.h"
#include "depth_metric_sums/metric_math.h"

namespace depthmetric {
namespace depth_metric_sums {
namespace {

constexpr int kWarps = kThreadsPerBlock / 32;
constexpr int64_t kMaxChunks = 64;     // blocks per image: with B >= 2 this fills an H100's 132 SMs
constexpr int64_t kPixelsPerThread = 8;

// Theoretical occupancy (benchmarks/results/cuda-kernels-sm90.md): 50% (59 registers) for 16/32-bit input;
// float64 input carries its ten sums and its math in float64, 72 registers, 3 blocks of 256 a SM (37.5%).
// That still holds the whole grid (64 blocks an image) of a batch of up to 6 on an H100 at once, and each
// thread streams its pixels with no reuse to hide behind more warps.
template <typename scalar_t>
__global__ void partial_sums_kernel(StridedView4<const scalar_t> p, StridedView4<const scalar_t> g,
                                    StridedView4<const bool> m, const double* __restrict__ scale,
                                    acc_type<scalar_t> lo, acc_type<scalar_t> hi, bool closed, int64_t r0, int64_t c0,
                                    int64_t cols, int64_t n_pixels, double* __restrict__ partial) {
  using acc_t = acc_type<scalar_t>;
  const int64_t b = blockIdx.y;
  const acc_t s = scale ? static_cast<acc_t>(scale[b]) : acc_t(1);
  Sums acc;
  acc.zero();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n_pixels;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t h = r0 + i / cols, c = c0 + i % cols;
    if (m.data && !m(b, 0, h, c)) continue;
    add_pixel<acc_t>(static_cast<acc_t>(p(b, 0, h, c)) * s, static_cast<acc_t>(g(b, 0, h, c)), lo, hi, closed, acc);
  }
  __shared__ double warp_sums[kWarps][kNumSums];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int k = 0; k < kNumSums; ++k) {
    double v = acc.v[k];
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
    if (lane == 0) warp_sums[warp][k] = v;
  }
  __syncthreads();
  if (threadIdx.x < kNumSums) {
    double v = 0.0;
    for (int w = 0; w < kWarps; ++w) v += warp_sums[w][threadIdx.x];
    partial[(b * gridDim.x + blockIdx.x) * kNumSums + threadIdx.x] = v;
  }
}

// One thread per (image, column): adds the image's chunk slots in chunk order.
__global__ void finish_kernel(const double* __restrict__ partial, int64_t chunks, int64_t n_out,
                              double* __restrict__ out) {
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < n_out;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = t / kNumSums, k = t % kNumSums;
    double v = 0.0;
    for (int64_t j = 0; j < chunks; ++j) v += partial[(b * chunks + j) * kNumSums + k];
    out[t] = v;
  }
}

Tensor sums_cuda(const Tensor& pred, const Tensor& gt, const std::optional<Tensor>& mask,
                 const std::optional<Tensor>& scale, double min_depth, double max_depth,
                 const std::vector<int64_t>& window, bool closed) {
  const Window w = check_inputs(pred, gt, mask, scale, min_depth, max_depth, window);
  const CudaDeviceGuard guard(pred);
  const int64_t B = pred.size(0), n_pixels = w.rows() * w.cols();
  auto out = zeros(pred, {B, kNumSums}, ScalarType::Double);
  if (B == 0 || n_pixels == 0) return out;
  check_grid_dim("depth_metric_sums", "images per call", B);
  // The chunk count depends on the sizes only, so the summation order (and result) is fixed for a shape.
  const int64_t chunks =
      std::min(kMaxChunks, (n_pixels + kThreadsPerBlock * kPixelsPerThread - 1) / (kThreadsPerBlock * kPixelsPerThread));
  auto partial = empty(pred, {B, chunks, kNumSums}, ScalarType::Double);
  const auto scale_c = scale.has_value() ? std::optional<Tensor>(torch::stable::contiguous(*scale)) : std::nullopt;
  const auto mv = mask.has_value() ? strided_view4<const bool>(*mask) : StridedView4<const bool>{nullptr, 0, 0, 0, 0};
  DM_DISPATCH_FLOATING_TYPES(pred.scalar_type(), "depth_metric_sums_cuda", [&] {
    using acc_t = acc_type<scalar_t>;
    DM_LAUNCH(partial_sums_kernel<scalar_t>, dim3(static_cast<unsigned>(chunks), static_cast<unsigned>(B)),
              kThreadsPerBlock, strided_view4<const scalar_t>(pred), strided_view4<const scalar_t>(gt), mv,
              scale_c ? data_of<const double>(*scale_c) : nullptr, static_cast<acc_t>(min_depth),
              static_cast<acc_t>(max_depth), closed, w.r0, w.c0, w.cols(), n_pixels, data_of<double>(partial));
  });
  const int64_t n_out = B * kNumSums;
  DM_LAUNCH(finish_kernel, grid_for(n_out), kThreadsPerBlock, data_of<const double>(partial), chunks, n_out,
            data_of<double>(out));
  return out;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(depthmetric, CUDA, m) { m.impl("depth_metric_sums", TORCH_BOX(&sums_cuda)); }

}  // namespace depth_metric_sums
}  // namespace depthmetric
