// CUDA kernels of depthmetric::min_reprojection: one thread per pixel, no shared memory and no barriers.
// A thread reads its reflected 3x3 neighbourhood of the target and of each candidate straight from global
// memory (neighbouring threads share the lines in L1), so every image is read from DRAM about once; the
// photometric error, the minimum and the winner stay in registers. The backward gives a thread one input
// pixel of one warped image: it reads the 5x5 neighbourhood (the 3x3 windows of the outputs that read the
// pixel), recomputes those outputs' window statistics where the image won, and gathers their
// coefficients, deterministically. Outputs no warped image won are skipped, and so is the whole
// neighbourhood when none of its outputs chose this image.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>

#include <tuple>

#include <vector>

#include "common/cuda_launch.cuh"
#include "common/tensor_views.h"
#include "min_reprojection/min_reprojection.h"
#include "min_reprojection/reprojection_math.h"
#include "ssim/ssim_math.h"

namespace depthmetric {
namespace min_reprojection {
namespace {

using ssim::Axis;
using ssim::Window;

constexpr int kBlockW = 32, kBlockH = 8;

template <typename T, int N>
struct Views {  // image views passed by value
  StridedView4<T> v[N];
};

// The input index tap t reads (Axis::source: nn.ReflectionPad2d(1)); taps past one reflection, which only
// outputs outside the image read, load index 0 so that every load stays in bounds.
__device__ __forceinline__ int64_t loaded_index(const Axis& a, int64_t t) {
  const int64_t i = a.source(t);
  return i < 0 ? 0 : i;
}

// Input pixel (rows[i], cols[j]) of plane (b, c), in acc_t: rows and cols hold the reflected indices of a
// patch centred on the thread's pixel.
template <typename acc_t, typename scalar_t, int N>
__device__ __forceinline__ acc_t load_tap(const StridedView4<const scalar_t>& v, int64_t b, int64_t c,
                                          const int64_t (&rows)[N], const int64_t (&cols)[N], int i, int j) {
  return static_cast<acc_t>(v.data[b * v.s0 + c * v.s1 + rows[i] * v.s2 + cols[j] * v.s3]);
}

// SSIM terms of the 3x3 window whose top-left tap is (i0, j0) in two patches.
template <int N, typename acc_t>
__device__ __forceinline__ ssim::SsimTerms<acc_t> box3_terms(const acc_t (&x)[N][N], const acc_t (&y)[N][N], int i0,
                                                             int j0) {
  ssim::Moments<acc_t> m{0, 0, 0, 0, 0};
#pragma unroll
  for (int i = 0; i < 3; ++i) {
#pragma unroll
    for (int j = 0; j < 3; ++j) {
      const acc_t vx = x[i0 + i][j0 + j], vy = y[i0 + i][j0 + j];
      m.mx += vx;
      m.my += vy;
      m.xx += vx * vx;
      m.yy += vy * vy;
      m.xy += vx * vy;
    }
  }
  const acc_t ninth = acc_t(1) / acc_t(9);
  m.mx *= ninth;
  m.my *= ninth;
  m.xx *= ninth;
  m.yy *= ninth;
  m.xy *= ninth;
  return ssim::ssim_terms(m);
}

// Blackwell's ptxas (sm_100, sm_120) needs more registers for the same loops than sm_75 to sm_90: at the
// bounds below it spilled 320 bytes (float64 forward at 64 registers) and 152 (float32 backward at 128).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 1000
constexpr bool kBlackwell = true;
#else
constexpr bool kBlackwell = false;
#endif

// Resident blocks per SM each kernel is compiled for. The forward: 4 (64 registers a thread, 32 of 64 warps:
// 50% theoretical occupancy); float64 on Blackwell 3 (80 registers, 24 warps: 37.5%), the most that holds
// its 3x3 patches without spilling.
template <typename acc_t>
constexpr int forward_min_blocks() {
  return kBlackwell && sizeof(acc_t) == 8 ? 3 : 4;
}
// The backward: 2 (128 registers, 16 warps: 25%) hold the 16-bit and float32 kernels' 9 window weights and
// the taps of the windows still to come. float64 needs twice the registers for the same values and spilled
// at 128 (68 bytes of stores even with the taps loaded as late as they can be), and so did every dtype on
// Blackwell, so those are compiled for one block (up to 255 registers, 8 warps: 12.5%, 16.7% of sm_120's 48):
// local-memory round trips in the channel loop would cost more than the warps they give up.
template <typename acc_t>
constexpr int backward_min_blocks() {
  return kBlackwell || sizeof(acc_t) == 8 ? 1 : 2;
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kBlockW * kBlockH, forward_min_blocks<acc_t>()) forward_kernel(
    StridedView4<const scalar_t> target, Views<const scalar_t, 2 * kMaxSources> cands, int n_warped, int n_cands,
    const acc_t* __restrict__ noise, int64_t C, Axis ah, Axis aw, TermWeights<acc_t> weights, bool mean_sources,
    acc_t* __restrict__ loss, int64_t* __restrict__ winner) {
  const int64_t w = static_cast<int64_t>(blockIdx.x) * kBlockW + threadIdx.x;
  const int64_t h = static_cast<int64_t>(blockIdx.y) * kBlockH + threadIdx.y;
  const int64_t H = ah.n, W = aw.n, b = blockIdx.z, B = gridDim.z;
  if (h >= H || w >= W) return;
  int64_t rows[3], cols[3];
#pragma unroll
  for (int d = 0; d < 3; ++d) {
    rows[d] = loaded_index(ah, h - 1 + d);
    cols[d] = loaded_index(aw, w - 1 + d);
  }
  acc_t best = 0, warped_sum = 0, identity_sum = 0;
  int64_t arg = 0;
  for (int k = 0; k < n_cands; ++k) {
    acc_t pe = 0;
    for (int64_t c = 0; c < C; ++c) {
      acc_t x[3][3], y[3][3];
#pragma unroll
      for (int i = 0; i < 3; ++i) {  // row by row: the float64 kernel spilled with the whole patch loaded first
#pragma unroll
        for (int j = 0; j < 3; ++j) {
          x[i][j] = load_tap<acc_t>(cands.v[k], b, c, rows, cols, i, j);
          y[i][j] = load_tap<acc_t>(target, b, c, rows, cols, i, j);
        }
      }
      pe += channel_error(weights, ssim::dssim(box3_terms(x, y, 0, 0).ssim).value, x[1][1], y[1][1]);
    }
    if (k >= n_warped) pe += noise[(((k - n_warped) * B + b) * H + h) * W + w];  // identity tie-break
    if (mean_sources) {
      (k < n_warped ? warped_sum : identity_sum) += pe;
    } else if (k == 0 || pe < best) {  // the first minimum in candidate order
      best = pe;
      arg = k;
    }
  }
  if (mean_sources) {
    const auto choice = mean_choice(warped_sum, identity_sum, int64_t{n_warped}, n_cands > n_warped);
    best = choice.loss;
    arg = choice.winner;
  }
  loss[(b * H + h) * W + w] = best;
  winner[(b * H + h) * W + w] = arg;
}

// The term weights come as two scalars: as one TermWeights parameter the float64 kernel spilled more.
// warped, grads (indexed by s) and win (by Axis::weight) are read in place as __grid_constant__ parameters:
// indexed at run time, by-value parameters are copied to a per-thread stack frame.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kBlockW * kBlockH, backward_min_blocks<acc_t>()) backward_kernel(
    StridedView4<const acc_t> grad_loss, const int64_t* __restrict__ winner, StridedView4<const scalar_t> target,
    const __grid_constant__ Views<const scalar_t, kMaxSources> warped,
    const __grid_constant__ Views<scalar_t, kMaxSources> grads, int n_warped, int64_t C, Axis ah, Axis aw,
    const __grid_constant__ Window<acc_t> win, acc_t w_ssim, acc_t w_l1, bool mean_sources) {
  const int64_t q_w = static_cast<int64_t>(blockIdx.x) * kBlockW + threadIdx.x;
  const int64_t q_h = static_cast<int64_t>(blockIdx.y) * kBlockH + threadIdx.y;
  const int64_t H = ah.n, W = aw.n, B = gridDim.z / n_warped;
  const int64_t b = blockIdx.z % B, s = blockIdx.z / B;
  if (q_h >= H || q_w >= W) return;
  // Output p = q + (i - 1, j - 1): its weight g * selection, times the window weight with which it reads q
  // (reflection folded in); the L1 term takes the centre's weight alone.
  acc_t weight[3][3];
  bool any = false;
#pragma unroll
  for (int i = 0; i < 3; ++i) {
#pragma unroll
    for (int j = 0; j < 3; ++j) {
      const int64_t p_h = q_h - 1 + i, p_w = q_w - 1 + j;
      acc_t wt = 0;
      if (p_h >= 0 && p_h < H && p_w >= 0 && p_w < W) {
        wt = grad_loss(b, 0, p_h, p_w) * selected<acc_t>(winner[(b * H + p_h) * W + p_w], s, n_warped, mean_sources);
      }
      weight[i][j] = wt;
      any |= wt != acc_t(0);
    }
  }
  const acc_t l1_weight = weight[1][1] * w_l1;
#pragma unroll
  for (int i = 0; i < 3; ++i) {
#pragma unroll
    for (int j = 0; j < 3; ++j) {
      weight[i][j] *= w_ssim * ah.weight(win, q_h - 1 + i, q_h) * aw.weight(win, q_w - 1 + j, q_w);
    }
  }
  if (!any) {  // no output that reads this pixel chose this image
    for (int64_t c = 0; c < C; ++c) grads.v[s](b, c, q_h, q_w) = scalar_t(0);
    return;
  }
  int64_t rows[5], cols[5];
#pragma unroll
  for (int d = 0; d < 5; ++d) {
    rows[d] = loaded_index(ah, q_h - 2 + d);
    cols[d] = loaded_index(aw, q_w - 2 + d);
  }
  const auto first = [](int t) { return t < 2 ? 0 : t - 2; };  // the first window that reads patch row/column t
  for (int64_t c = 0; c < C; ++c) {
    acc_t x[5][5], y[5][5];
    acc_t f_mx = 0, f_sq = 0, f_xy = 0;  // gathered coefficients of mu_x, E[x^2], E[xy]
#pragma unroll
    for (int i = 0; i < 3; ++i) {
#pragma unroll
      for (int j = 0; j < 3; ++j) {
        // A tap is loaded just before the first window that reads it, window (first(r), first(col)), so that
        // only the taps of the windows still to come are live (with the whole 5x5 patches loaded first, the
        // float64 kernel spilled).
#pragma unroll
        for (int r = 0; r < 5; ++r) {
#pragma unroll
          for (int col = 0; col < 5; ++col) {
            if (first(r) == i && first(col) == j) {
              x[r][col] = load_tap<acc_t>(warped.v[s], b, c, rows, cols, r, col);
              y[r][col] = load_tap<acc_t>(target, b, c, rows, cols, r, col);
            }
          }
        }
        if (weight[i][j] == acc_t(0)) continue;
        const auto t = box3_terms(x, y, i, j);
        const acc_t k = weight[i][j] * ssim::dssim(t.ssim).slope;
        f_mx += k * t.d_mx;
        f_sq += k * t.d_sq;
        f_xy += k * t.d_xy;
      }
    }
    grads.v[s](b, c, q_h, q_w) = static_cast<scalar_t>(input_gradient(f_mx, f_sq, f_xy, x[2][2], y[2][2], l1_weight));
  }
}

template <typename T, int N>
Views<T, N> views_of(const TensorList& a, const TensorList& b = {}) {
  Views<T, N> out{};
  int i = 0;
  for (const auto& t : a) out.v[i++] = strided_view4<T>(t);
  for (const auto& t : b) out.v[i++] = strided_view4<T>(t);
  return out;
}

// z: the grid's third dimension, `what` it counts (for the message).
dim3 tiles(int64_t h, int64_t w, int64_t z, const char* what) {
  check_grid_dim("min_reprojection", what, z);
  return dim3(static_cast<unsigned>((w + kBlockW - 1) / kBlockW), static_cast<unsigned>((h + kBlockH - 1) / kBlockH),
              static_cast<unsigned>(z));
}

std::tuple<Tensor, Tensor> forward_cuda(const Tensor& target, const TensorList& warped, const TensorList& sources,
                                        const Tensor& noise_in, double alpha, bool mean_sources) {
  check_forward(target, warped, sources, noise_in, alpha);
  const CudaDeviceGuard guard(target);
  const int64_t B = target.size(0), C = target.size(1), H = target.size(2), W = target.size(3);
  auto [loss, winner] = allocate_forward(target);
  if (loss.numel() == 0) return {loss, winner};
  const auto noise = sources.empty() ? loss : torch::stable::contiguous(noise_in);  // unread without sources
  const Axis ah = ssim::make_axis(H, ssim::kReflect, 1), aw = ssim::make_axis(W, ssim::kReflect, 1);
  DM_DISPATCH_FLOATING_TYPES(target.scalar_type(), "min_reprojection_cuda", [&] {
    using acc_t = acc_type<scalar_t>;
    DM_LAUNCH((forward_kernel<scalar_t, acc_t>), tiles(H, W, B, "images (B)"), dim3(kBlockW, kBlockH),
              strided_view4<const scalar_t>(target), (views_of<const scalar_t, 2 * kMaxSources>(warped, sources)),
              static_cast<int>(warped.size()), static_cast<int>(warped.size() + sources.size()),
              data_of<const acc_t>(noise), C, ah, aw, term_weights<acc_t>(alpha, C), mean_sources,
              data_of<acc_t>(loss), data_of<int64_t>(winner));
  });
  return {loss, winner};
}

TensorList backward_cuda(const Tensor& grad_loss, const Tensor& target, const TensorList& warped,
                         const Tensor& winner_in, double alpha, bool mean_sources) {
  check_backward(grad_loss, target, warped, winner_in, alpha);
  const CudaDeviceGuard guard(target);
  auto grads = allocate_gradients(warped);
  if (target.numel() == 0) return grads;
  const auto winner = torch::stable::contiguous(winner_in);
  const int64_t B = target.size(0), C = target.size(1), H = target.size(2), W = target.size(3);
  const int64_t S = static_cast<int64_t>(warped.size());
  const Axis ah = ssim::make_axis(H, ssim::kReflect, 1), aw = ssim::make_axis(W, ssim::kReflect, 1);
  DM_DISPATCH_FLOATING_TYPES(target.scalar_type(), "min_reprojection_backward_cuda", [&] {
    using acc_t = acc_type<scalar_t>;
    const auto terms = term_weights<acc_t>(alpha, C);
    // grad_loss is read through its strides: the gradient of a mean arrives as an expanded scalar.
    DM_LAUNCH((backward_kernel<scalar_t, acc_t>), tiles(H, W, B * S, "warped images (B*S)"), dim3(kBlockW, kBlockH),
              strided_view4<const acc_t>(torch::stable::unsqueeze(grad_loss, 1)), data_of<const int64_t>(winner),
              strided_view4<const scalar_t>(target), (views_of<const scalar_t, kMaxSources>(warped)),
              (views_of<scalar_t, kMaxSources>(grads)), static_cast<int>(S), C, ah, aw,
              ssim::make_window<acc_t>(ssim::kBox3), terms.ssim, terms.l1, mean_sources);
  });
  return grads;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(depthmetric, CUDA, m) {
  m.impl("min_reprojection", TORCH_BOX(&forward_cuda));
  m.impl("_min_reprojection_backward", TORCH_BOX(&backward_cuda));
}

}  // namespace min_reprojection
}  // namespace depthmetric
