// CUDA kernels of depthmetric::order_statistics. The forward gives a block one region (grid-stride over the
// B*R regions): its threads stride over the region's box, and every statistic is a block reduction (a fixed
// shared-memory tree: deterministic). The lower median and the trim threshold are selected by bisection on
// the values' order-preserving integer keys (order_statistics_math.h): 32 counting passes in float32, 64 in
// float64, each "how many members have key <= candidate", no sort and no scratch copy. The backward gives a
// thread one pixel and gathers the gradients of the R regions it belongs to, in region order (no atomics).
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>

#include <tuple>

#include "common/cuda_launch.cuh"
#include "common/tensor_views.h"
#include "order_statistics/order_statistics.h"
#include "order_statistics/order_statistics_math.h"

namespace depthmetric {
namespace order_statistics {
namespace {

constexpr int kRegionThreads = 256;

struct Sum {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a + b; }
};
struct Min {
  template <typename T>
  __device__ T operator()(T a, T b) const { return b < a ? b : a; }
};

// The block's reduction of v (every thread gets it); a fixed tree, so the same inputs give the same bits.
template <typename T, typename Op>
__device__ T block_reduce(T v, Op op) {
  __shared__ T partial[kRegionThreads];
  partial[threadIdx.x] = v;
  __syncthreads();
  for (int half = kRegionThreads / 2; half > 0; half /= 2) {
    if (static_cast<int>(threadIdx.x) < half) partial[threadIdx.x] = op(partial[threadIdx.x], partial[threadIdx.x + half]);
    __syncthreads();
  }
  const T out = partial[0];
  __syncthreads();  // partial[0] read by every thread before the next reduction overwrites it
  return out;
}

// The q-th smallest (0-based) member value of region reg of image b: the smallest key K with
// count(key <= K) > q, built bit by bit from the top.
template <typename acc_t, typename scalar_t>
__device__ acc_t select_kth(const Inputs<scalar_t>& in, const Region& reg, int64_t b, int64_t q) {
  using key_t = typename KeyType<acc_t>::type;
  constexpr int kBits = 8 * sizeof(key_t);
  const int64_t cols = reg.x1 - reg.x0, area = (reg.y1 - reg.y0) * cols;
  key_t result = 0;
  for (int bit = kBits - 1; bit >= 0; --bit) {
    const key_t candidate = result | ((key_t(1) << bit) - 1);  // this bit 0, every lower bit 1
    int64_t count = 0;
    for (int64_t p = threadIdx.x; p < area; p += kRegionThreads) {
      const int64_t i = reg.y0 + p / cols, j = reg.x0 + p % cols;
      if (member(in, reg, b, i, j)) count += ordered_key(value_at<acc_t>(in, b, i, j)) <= candidate;
    }
    if (block_reduce(count, Sum()) <= q) result |= key_t(1) << bit;
  }
  return value_of_key(result);
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kRegionThreads) forward_kernel(Inputs<scalar_t> in, const int64_t* boxes,
                                                                const double* ranges, const int64_t* ids,
                                                                acc_t* stats, int64_t* counts, int64_t R, int64_t H,
                                                                int64_t W, int64_t n_regions, double trim,
                                                                int64_t keep_rule, bool with_median) {
  for (int64_t t = blockIdx.x; t < n_regions; t += gridDim.x) {
    const int64_t b = t / R;
    const Region reg = region_of(boxes, ranges, ids, t, H, W);
    const int64_t cols = reg.x1 - reg.x0, area = reg.y1 > reg.y0 && cols > 0 ? (reg.y1 - reg.y0) * cols : 0;
    int64_t mine = 0;
    for (int64_t p = threadIdx.x; p < area; p += kRegionThreads)
      mine += member(in, reg, b, reg.y0 + p / cols, reg.x0 + p % cols);
    const int64_t n = block_reduce(mine, Sum());
    acc_t* s = stats + t * kNumStats;
    int64_t* c = counts + t * kNumCounts;
    if (n == 0) {
      if (threadIdx.x == 0) {
        for (int k = 0; k < kNumStats; ++k) s[k] = acc_t(0);
        for (int k = 0; k < kNumCounts; ++k) c[k] = 0;
        c[kMedianIndex] = -1;
      }
      continue;
    }
    acc_t med = 0, mad = 0;
    int64_t first = -1, sign_sum = 0;
    if (with_median) {
      med = select_kth<acc_t>(in, reg, b, (n - 1) / 2);
      first = INT64_MAX;
      for (int64_t p = threadIdx.x; p < area; p += kRegionThreads) {
        const int64_t i = reg.y0 + p / cols, j = reg.x0 + p % cols;
        if (!member(in, reg, b, i, j)) continue;
        const acc_t v = value_at<acc_t>(in, b, i, j);
        mad += abs_of(v - med);
        sign_sum += (v > med) - (v < med);
        if (v == med && i * W + j < first) first = i * W + j;
      }
      mad = block_reduce(mad, Sum());
      first = block_reduce(first, Min());
      sign_sum = block_reduce(sign_sum, Sum());
    }
    const int64_t keep = kept_count(n, trim, keep_rule);
    acc_t thr = 0, below_sum = 0;
    int64_t below = 0, equal = 0;
    if (keep > 0) {
      thr = select_kth<acc_t>(in, reg, b, keep - 1);
      for (int64_t p = threadIdx.x; p < area; p += kRegionThreads) {
        const int64_t i = reg.y0 + p / cols, j = reg.x0 + p % cols;
        if (!member(in, reg, b, i, j)) continue;
        const acc_t v = value_at<acc_t>(in, b, i, j);
        if (v < thr) {
          below_sum += v;
          ++below;
        } else if (v == thr) {
          ++equal;
        }
      }
      below_sum = block_reduce(below_sum, Sum());
      below = block_reduce(below, Sum());
      equal = block_reduce(equal, Sum());
    }
    if (threadIdx.x == 0) {
      s[kMedian] = med;
      s[kMad] = mad / static_cast<acc_t>(n);
      s[kTrimmed] = keep > 0 ? below_sum + static_cast<acc_t>(keep - below) * thr : acc_t(0);
      s[kThreshold] = thr;
      c[kCount] = n;
      c[kMedianIndex] = first;
      c[kBelow] = below;
      c[kEqual] = equal;
      c[kSignSum] = sign_sum;
    }
  }
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreadsPerBlock) backward_kernel(
    Inputs<scalar_t> in, StridedView4<const acc_t> grad, const int64_t* boxes, const double* ranges,
    const int64_t* ids, const acc_t* stats, const int64_t* counts, scalar_t* grad_values, int64_t R, int64_t H,
    int64_t W, int64_t n, double trim, int64_t keep_rule) {
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < n;
       p += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t j = p % W, i = (p / W) % H, b = p / (W * H), flat = i * W + j;
    const acc_t v = value_at<acc_t>(in, b, i, j);
    acc_t g = 0;
    for (int64_t r = 0; r < R; ++r) {
      const int64_t t = b * R + r;
      const int64_t* c = counts + t * kNumCounts;
      const int64_t count = c[kCount];
      if (count == 0) continue;
      const Region reg = region_of(boxes, ranges, ids, t, H, W);
      if (i < reg.y0 || i >= reg.y1 || j < reg.x0 || j >= reg.x1 || !member(in, reg, b, i, j)) continue;
      const acc_t* s = stats + t * kNumStats;
      const acc_t inv_n = acc_t(1) / static_cast<acc_t>(count), g_mad = grad(b, r, 0, kMad);
      g += g_mad * sign_of(v - s[kMedian]) * inv_n +
           grad(b, r, 0, kTrimmed) *
               trimmed_weight(v, s[kThreshold], kept_count(count, trim, keep_rule), c[kBelow], c[kEqual]);
      if (flat == c[kMedianIndex]) g += grad(b, r, 0, kMedian) - g_mad * static_cast<acc_t>(c[kSignSum]) * inv_n;
    }
    grad_values[p] = static_cast<scalar_t>(g);
  }
}

std::tuple<Tensor, Tensor> forward_cuda(const Tensor& values, const Tensor& valid, const Tensor& key,
                                        const Tensor& labels, const Tensor& boxes, const Tensor& ranges,
                                        const Tensor& ids, double trim, int64_t keep_rule, bool with_median) {
  check_inputs(values, valid, key, labels, boxes, ranges, ids, trim, keep_rule);
  const CudaDeviceGuard guard(values);
  auto [stats, counts] = allocate_outputs(values, boxes);
  const int64_t R = boxes.size(1), n_regions = boxes.size(0) * R;
  if (n_regions == 0) return {stats, counts};
  const dim3 grid(static_cast<unsigned>(n_regions < (int64_t{1} << 20) ? n_regions : (int64_t{1} << 20)));
  DM_DISPATCH_FLOATING_TYPES(values.scalar_type(), "order_statistics_cuda", [&] {
    using acc_t = acc_type<scalar_t>;
    DM_LAUNCH((forward_kernel<scalar_t, acc_t>), grid, dim3(kRegionThreads),
              inputs_of<scalar_t>(values, valid, key, labels), data_of<const int64_t>(boxes),
              data_of<const double>(ranges), data_of<const int64_t>(ids), data_of<acc_t>(stats),
              data_of<int64_t>(counts), R, values.size(1), values.size(2), n_regions, trim, keep_rule, with_median);
  });
  return {stats, counts};
}

Tensor backward_cuda(const Tensor& grad, const Tensor& values, const Tensor& valid, const Tensor& key,
                     const Tensor& labels, const Tensor& boxes, const Tensor& ranges, const Tensor& ids, double trim,
                     int64_t keep_rule, const Tensor& stats, const Tensor& counts) {
  check_backward(grad, values, valid, key, labels, boxes, ranges, ids, trim, keep_rule, stats, counts);
  const CudaDeviceGuard guard(values);
  auto grad_values = empty(values, {values.size(0), values.size(1), values.size(2)}, values.scalar_type());
  const int64_t n = grad_values.numel();
  if (n == 0) return grad_values;
  DM_DISPATCH_FLOATING_TYPES(values.scalar_type(), "order_statistics_backward_cuda", [&] {
    using acc_t = acc_type<scalar_t>;
    const auto gv = StridedView4<const acc_t>{data_of<const acc_t>(grad), grad.stride(0), grad.stride(1), 0,
                                              grad.stride(2)};
    DM_LAUNCH((backward_kernel<scalar_t, acc_t>), grid_for(n), dim3(kThreadsPerBlock),
              inputs_of<scalar_t>(values, valid, key, labels), gv, data_of<const int64_t>(boxes),
              data_of<const double>(ranges), data_of<const int64_t>(ids), data_of<const acc_t>(stats),
              data_of<const int64_t>(counts), data_of<scalar_t>(grad_values), boxes.size(1), values.size(1),
              values.size(2), n, trim, keep_rule);
  });
  return grad_values;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(depthmetric, CUDA, m) {
  m.impl("order_statistics", TORCH_BOX(&forward_cuda));
  m.impl("_order_statistics_backward", TORCH_BOX(&backward_cuda));
}

}  // namespace order_statistics
}  // namespace depthmetric
