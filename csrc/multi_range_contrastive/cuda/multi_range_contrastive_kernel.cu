// CUDA kernels of depthmetric::multi_range_contrastive: one thread per pixel. The shifts are uniform over
// the image, so neighbouring threads read neighbouring shifted pixels and every load stays coalesced. No
// rolled copy is made: a sample feature is read at its shifted index.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>

#include <tuple>
#include <vector>

#include "common/cuda_launch.cuh"
#include "common/tensor_views.h"
#include "multi_range_contrastive/multi_range_contrastive.h"
#include "multi_range_contrastive/pair_math.h"

namespace depthmetric {
namespace multi_range_contrastive {
namespace {

// Shifts handled per pass over the channels; their offsets and sums live in registers. The backward keeps 16:
// a pixel's gradient is summed chunk by chunk, so its chunk fixes the summation order. The forward's pairs
// are independent of each other, so its chunk only sets how often the anchor's features are read: 8 shifts
// (4 for float64) keep the forward within 64 registers with no spills (16 spilled 52 to 604 bytes a thread at
// sm_90).
constexpr int kChunk = 16;
template <typename acc_t>
constexpr int forward_chunk() {
  return sizeof(acc_t) == 8 ? 4 : 8;
}
// The loops are latency-bound: capping the forward's registers for 4 resident blocks per SM (64 registers,
// 32 of 64 warps: 50% theoretical occupancy) keeps more warps in flight to hide load latency (measured on an
// H100, v2 -> v3 in benchmarks/results/NOTES_multi_range_contrastive.md).
constexpr int kForwardMinBlocks = 4;
// The backward holds 16 shifts' two offsets and two weights across its channel loop: 64 registers of int32
// offsets and float32 weights, twice that for float64 or int64. v3 capped it for 3 blocks of 256 (80
// registers), which spilled 80 to 700 bytes a thread (sm_90). It now runs blocks of 128 threads, so that
// whole blocks use the registers left: 5 of them with int32 indices and 16/32-bit features (up to 96
// registers: 20 of 64 warps, 31.25% theoretical occupancy), 4 for float64 (128 registers, 16 warps: 25%), 2
// with int64 indices (tensors past 2^31 elements only; up to 255 registers, 185-220 used, 8 warps: 12.5%),
// rather than local-memory round trips in the innermost loop. v3's 3 blocks with spills were faster than
// v2's 2 blocks of 94 registers on an H100; this build's speed against v3 has yet to be measured on a GPU.
constexpr int kBackwardThreads = 128;
template <typename acc_t, typename index_t>
constexpr int backward_min_blocks() {
  return sizeof(index_t) == 8 ? 2 : (sizeof(acc_t) == 8 ? 4 : 5);
}

template <typename scalar_t, typename acc_t, typename index_t>
__global__ void __launch_bounds__(kThreadsPerBlock, kForwardMinBlocks)
    forward_kernel(StridedView4<const scalar_t, index_t> f, const acc_t* __restrict__ depth,
                   const int64_t* __restrict__ shifts, index_t n_shifts, index_t B, index_t C, index_t H, index_t W,
                   index_t anchor_start, index_t n_anchors, Rule<acc_t> rule, acc_t* __restrict__ loss,
                   int32_t* __restrict__ count, acc_t* __restrict__ coef) {
  constexpr int kFwdChunk = forward_chunk<acc_t>();
  const index_t total = n_anchors * H * W;  // x: an anchor pixel; its image is anchor_start + x / (H * W)
  for (index_t x = blockIdx.x * blockDim.x + threadIdx.x; x < total; x += gridDim.x * blockDim.x) {
    const index_t w = x % W, h = (x / W) % H, b = anchor_start + x / (H * W);
    const acc_t anchor_depth = depth[(b * H + h) * W + w];
    const index_t anchor = f.offset(b, 0, h, w);
    acc_t loss_sum = 0;
    int32_t counted = 0;
    for (index_t n0 = 0; n0 < n_shifts; n0 += kFwdChunk) {
      index_t sample[kFwdChunk];
      acc_t code[kFwdChunk], dist_sq[kFwdChunk];
      bool any = false;
#pragma unroll
      for (int k = 0; k < kFwdChunk; ++k) {
        const index_t n = n0 + k;
        code[k] = PairCode<acc_t>::kIgnored;
        dist_sq[k] = acc_t(0);
        sample[k] = anchor;
        if (n < n_shifts) {
          const index_t bs = roll_back<index_t>(b, shifts[3 * n], B), hs = roll_back<index_t>(h, shifts[3 * n + 1], H),
                        ws = roll_back<index_t>(w, shifts[3 * n + 2], W);
          sample[k] = f.offset(bs, 0, hs, ws);
          code[k] = rule.classify(anchor_depth, depth[(bs * H + hs) * W + ws]);
          any |= is_counted(code[k]);
        }
      }
      if (any) {
        for (index_t c = 0; c < C; ++c) {
          const acc_t a = static_cast<acc_t>(f.data[anchor + c * f.s1]);
#pragma unroll
          for (int k = 0; k < kFwdChunk; ++k) {
            if (is_counted(code[k])) {
              const acc_t diff = a - static_cast<acc_t>(f.data[sample[k] + c * f.s1]);
              dist_sq[k] += diff * diff;
            }
          }
        }
      }
#pragma unroll
      for (int k = 0; k < kFwdChunk; ++k) {
        const index_t n = n0 + k;
        if (n < n_shifts) {
          PairTerm<acc_t> term{0, 0};
          if (is_counted(code[k])) {
            term = pair_term(code[k], dist_sq[k]);
            loss_sum += term.loss;
            ++counted;
          }
          coef[n * total + x] = term.coef;
        }
      }
    }
    loss[x] = loss_sum;
    count[x] = counted;
  }
}

// Gathers, for pixel x, its pairs as anchor (x, x - s) and as sample (x + s, x): each output element is
// written by one thread only, so the gradient is deterministic. x is an anchor only in the anchor images, and
// x + s only counts when it is one. With more than kChunk shifts the partial sums of later chunks are added to
// the output by the same thread (out_t is float32 then for 16-bit input).
template <typename scalar_t, typename acc_t, typename out_t, typename index_t>
__global__ void __launch_bounds__(kBackwardThreads, backward_min_blocks<acc_t, index_t>())
    backward_kernel(const acc_t* __restrict__ grad_loss, StridedView4<const scalar_t, index_t> f,
                    const int64_t* __restrict__ shifts, index_t n_shifts, index_t B, index_t C, index_t H, index_t W,
                    index_t anchor_start, index_t n_anchors, const acc_t* __restrict__ coef,
                    StridedView4<out_t, index_t> grad) {
  const index_t all = B * H * W, total = n_anchors * H * W;
  for (index_t x = blockIdx.x * blockDim.x + threadIdx.x; x < all; x += gridDim.x * blockDim.x) {
    const index_t w = x % W, h = (x / W) % H, b = x / (H * W);
    const index_t self = f.offset(b, 0, h, w), out = grad.offset(b, 0, h, w);
    const index_t x_anchor = (b - anchor_start) * H * W + h * W + w;  // x's index among the anchors
    const bool x_is_anchor = b >= anchor_start && b - anchor_start < n_anchors;
    const acc_t g = x_is_anchor ? grad_loss[x_anchor] : acc_t(0);
    for (index_t n0 = 0; n0 < n_shifts; n0 += kChunk) {
      index_t q_off[kChunk], p_off[kChunk];
      acc_t w_anchor[kChunk], w_sample[kChunk];
      acc_t w_sum = 0;
#pragma unroll
      for (int k = 0; k < kChunk; ++k) {
        const index_t n = n0 + k;
        w_anchor[k] = w_sample[k] = acc_t(0);
        q_off[k] = p_off[k] = self;
        if (n < n_shifts) {
          const index_t sb = shifts[3 * n], sh = shifts[3 * n + 1], sw = shifts[3 * n + 2];
          q_off[k] = f.offset(roll_back(b, sb, B), 0, roll_back(h, sh, H), roll_back(w, sw, W));
          const index_t bp = roll_forward(b, sb, B), hp = roll_forward(h, sh, H), wp = roll_forward(w, sw, W);
          const index_t p = ((bp - anchor_start) * H + hp) * W + wp;  // p's index among the anchors
          p_off[k] = f.offset(bp, 0, hp, wp);
          w_anchor[k] = x_is_anchor ? g * coef[n * total + x_anchor] : acc_t(0);
          w_sample[k] = bp >= anchor_start && bp - anchor_start < n_anchors ? grad_loss[p] * coef[n * total + p]
                                                                            : acc_t(0);
          w_sum += w_anchor[k] + w_sample[k];
        }
      }
      for (index_t c = 0; c < C; ++c) {
        acc_t acc = w_sum * static_cast<acc_t>(f.data[self + c * f.s1]);
#pragma unroll
        for (int k = 0; k < kChunk; ++k) {
          if (w_anchor[k] != acc_t(0)) acc -= w_anchor[k] * static_cast<acc_t>(f.data[q_off[k] + c * f.s1]);
          if (w_sample[k] != acc_t(0)) acc -= w_sample[k] * static_cast<acc_t>(f.data[p_off[k] + c * f.s1]);
        }
        out_t& dst = grad.data[out + c * grad.s1];
        dst = n0 == 0 ? static_cast<out_t>(acc) : static_cast<out_t>(static_cast<acc_t>(dst) + acc);
      }
    }
  }
}

// The shifts brought into [0, B), [0, H), [0, W), as a contiguous N,3 tensor the kernels read.
__global__ void reduce_shifts_kernel(const int64_t* __restrict__ shifts, int64_t s0, int64_t s1, int64_t n_shifts,
                                     int64_t B, int64_t H, int64_t W, int64_t* __restrict__ out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < 3 * n_shifts;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = i / 3, k = i % 3;
    out[i] = reduce_shift(shifts[n * s0 + k * s1], k == 0 ? B : (k == 1 ? H : W));
  }
}

Tensor reduced_shifts(const Tensor& features, const Tensor& shifts) {
  const int64_t n_shifts = shifts.size(0);
  auto out = empty(shifts, {n_shifts, 3}, ScalarType::Long);
  if (n_shifts == 0 || features.numel() == 0) return out;
  DM_LAUNCH(reduce_shifts_kernel, grid_for(3 * n_shifts), kThreadsPerBlock, data_of<const int64_t>(shifts),
            shifts.stride(0), shifts.stride(1), n_shifts, features.size(0), features.size(2), features.size(3),
            data_of<int64_t>(out));
  return out;
}

std::tuple<Tensor, Tensor, Tensor> forward_cuda(const Tensor& features, const Tensor& depth_in,
                                                const Tensor& shifts_in, double r_p,
                                                const std::vector<double>& range_lo,
                                                const std::vector<double>& range_hi,
                                                const std::vector<double>& margins, int64_t anchor_start,
                                                std::optional<int64_t> anchor_count) {
  const auto anchors = check_forward(features, depth_in, shifts_in, anchor_start, anchor_count);
  const CudaDeviceGuard guard(features);
  auto out = allocate_forward(features, shifts_in.size(0), anchors);
  const int64_t B = features.size(0), C = features.size(1), H = features.size(2), W = features.size(3);
  if (out.loss.numel() == 0) return {out.loss, out.count, out.coef};
  const auto shifts = reduced_shifts(features, shifts_in);
  const auto depth = torch::stable::contiguous(depth_in);
  const bool int32 = fits_int32({storage_extent(features), out.coef.numel(), depth_in.numel()});
  DM_DISPATCH_FLOATING_TYPES(features.scalar_type(), "multi_range_contrastive_cuda", [&] {
    using acc_t = acc_type<scalar_t>;
    with_index_type(int32, [&](auto index_tag) {
      using index_t = decltype(index_tag);
      DM_LAUNCH((forward_kernel<scalar_t, acc_t, index_t>), grid_for(out.loss.numel()), kThreadsPerBlock,
                strided_view4<const scalar_t, index_t>(features), data_of<const acc_t>(depth),
                data_of<const int64_t>(shifts), static_cast<index_t>(shifts.size(0)), static_cast<index_t>(B),
                static_cast<index_t>(C), static_cast<index_t>(H), static_cast<index_t>(W),
                static_cast<index_t>(anchors.start), static_cast<index_t>(anchors.count),
                make_rule<acc_t>(r_p, range_lo, range_hi, margins), data_of<acc_t>(out.loss),
                data_of<int32_t>(out.count), data_of<acc_t>(out.coef));
    });
  });
  return {out.loss, out.count, out.coef};
}

Tensor backward_cuda(const Tensor& grad_loss_in, const Tensor& features, const Tensor& shifts_in,
                     const Tensor& coef_in, int64_t anchor_start) {
  const auto anchors = check_backward(grad_loss_in, features, shifts_in, coef_in, anchor_start);
  const CudaDeviceGuard guard(features);
  const int64_t B = features.size(0), C = features.size(1), H = features.size(2), W = features.size(3);
  auto grad = torch::stable::empty_like(features);
  if (grad.numel() == 0) return grad;
  if (shifts_in.size(0) == 0 || anchors.count == 0) return torch::stable::zero_(grad);
  const auto shifts = reduced_shifts(features, shifts_in);
  const auto grad_loss = torch::stable::contiguous(grad_loss_in);
  const auto coef = torch::stable::contiguous(coef_in);
  DM_DISPATCH_FLOATING_TYPES(features.scalar_type(), "multi_range_contrastive_backward_cuda", [&] {
    using acc_t = acc_type<scalar_t>;
    const auto launch = [&](auto out_tag, Tensor& dst) {
      using out_t = decltype(out_tag);
      with_index_type(fits_int32({storage_extent(features), storage_extent(dst), coef.numel()}), [&](auto index_tag) {
        using index_t = decltype(index_tag);
        DM_LAUNCH((backward_kernel<scalar_t, acc_t, out_t, index_t>), grid_for(B * H * W, kBackwardThreads),
                  kBackwardThreads, data_of<const acc_t>(grad_loss), strided_view4<const scalar_t, index_t>(features),
                  data_of<const int64_t>(shifts), static_cast<index_t>(shifts.size(0)), static_cast<index_t>(B),
                  static_cast<index_t>(C), static_cast<index_t>(H), static_cast<index_t>(W),
                  static_cast<index_t>(anchors.start), static_cast<index_t>(anchors.count),
                  data_of<const acc_t>(coef), strided_view4<out_t, index_t>(dst));
      });
    };
    if (shifts.size(0) > kChunk && sizeof(scalar_t) < sizeof(acc_t)) {
      auto wide = empty(features, features.sizes(), grad_loss.scalar_type());
      launch(acc_t{}, wide);
      torch::stable::copy_(grad, wide);
    } else {
      launch(scalar_t{}, grad);
    }
  });
  return grad;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(depthmetric, CUDA, m) {
  m.impl("multi_range_contrastive", TORCH_BOX(&forward_cuda));
  m.impl("_multi_range_contrastive_backward", TORCH_BOX(&backward_cuda));
}

}  // namespace multi_range_contrastive
}  // namespace depthmetric
