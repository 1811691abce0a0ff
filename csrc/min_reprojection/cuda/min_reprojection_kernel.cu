// CUDA kernels of depthmetric::min_reprojection. A block owns a 32x8 pixel tile of one image; each
// candidate's channels pass through shared memory with a one-pixel halo (reflected at the image edge), so
// every image is read once per pixel and tile; the photometric error, the minimum and the winner stay in
// registers. The backward gives a block one tile of one warped image: it recomputes the window statistics
// of the tile's outputs plus a one-pixel ring (the outputs whose 3x3 windows reach the tile), keeps their
// coefficients in shared memory and gathers them per input pixel, deterministically.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <vector>

#include "common/cuda_launch.cuh"
#include "common/tensor_views.h"
#include "min_reprojection/min_reprojection.h"
#include "ssim/ssim_math.h"

namespace depthmetric {
namespace minrep {
namespace {

using ssim::Axis;
using ssim::Window;

constexpr int kTileW = 32, kTileH = 8;

template <typename T, int N>
struct Views {  // image views passed by value
  StridedView4<T> v[N];
};

// Loads rows/cols [h0, h0 + H) x [w0, w0 + W) of tap positions (reflected into the image) of plane (b, c);
// positions no output reads (past the image and its reflection) are zero.
template <typename scalar_t, typename acc_t, int H, int W>
__device__ void load_tile(acc_t (&dst)[H][W], const StridedView4<const scalar_t>& v, int64_t b, int64_t c,
                          int64_t h0, int64_t w0, const Axis& ah, const Axis& aw) {
  for (int i = threadIdx.y * kTileW + threadIdx.x; i < H * W; i += kTileW * kTileH) {
    const int64_t sh = ah.source(h0 + i / W), sw = aw.source(w0 + i % W);
    dst[i / W][i % W] = sh >= 0 && sw >= 0 ? static_cast<acc_t>(v(b, c, sh, sw)) : acc_t(0);
  }
}

// SSIM terms of the 3x3 window centred at (r, col) of two shared tiles.
template <typename acc_t, int H, int W>
__device__ ssim::SsimTerms<acc_t> box3_terms(const acc_t (&sx)[H][W], const acc_t (&sy)[H][W], int r, int col) {
  ssim::Moments<acc_t> m{0, 0, 0, 0, 0};
#pragma unroll
  for (int i = -1; i <= 1; ++i) {
#pragma unroll
    for (int j = -1; j <= 1; ++j) {
      const acc_t vx = sx[r + i][col + j], vy = sy[r + i][col + j];
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

template <typename scalar_t, typename acc_t>
__global__ void forward_kernel(StridedView4<const scalar_t> target, Views<const scalar_t, 2 * kMaxSources> cands,
                               int64_t n_warped, int64_t n_cands, const acc_t* __restrict__ noise, int64_t C,
                               Axis ah, Axis aw, acc_t w_ssim, acc_t w_l1, bool mean_sources,
                               acc_t* __restrict__ loss, int64_t* __restrict__ winner) {
  constexpr int IH = kTileH + 2, IW = kTileW + 2;
  __shared__ acc_t st[IH][IW], sc[IH][IW];
  const int64_t b = blockIdx.z, h0 = static_cast<int64_t>(blockIdx.y) * kTileH,
                w0 = static_cast<int64_t>(blockIdx.x) * kTileW;
  const int64_t h = h0 + threadIdx.y, w = w0 + threadIdx.x;
  const bool inside = h < ah.n && w < aw.n;
  const int r = threadIdx.y + 1, col = threadIdx.x + 1;
  const int64_t H = ah.n, W = aw.n, B = gridDim.z;
  acc_t best = 0, warped_sum = 0, identity_sum = 0;
  int64_t arg = 0;
  for (int64_t k = 0; k < n_cands; ++k) {
    acc_t pe = 0;
    for (int64_t c = 0; c < C; ++c) {
      __syncthreads();  // the previous channel's tiles are consumed
      load_tile(st, target, b, c, h0 - 1, w0 - 1, ah, aw);
      load_tile(sc, cands.v[k], b, c, h0 - 1, w0 - 1, ah, aw);
      __syncthreads();
      if (inside) {
        const acc_t d = ssim::dssim(box3_terms(sc, st, r, col).ssim).value;
        const acc_t diff = sc[r][col] - st[r][col];
        pe += w_ssim * d + w_l1 * (diff < acc_t(0) ? -diff : diff);
      }
    }
    if (!inside) continue;
    if (k >= n_warped) pe += noise[(((k - n_warped) * B + b) * H + h) * W + w];  // identity tie-break
    if (mean_sources) {
      (k < n_warped ? warped_sum : identity_sum) += pe;
    } else if (k == 0 || pe < best) {  // the first minimum in candidate order
      best = pe;
      arg = k;
    }
  }
  if (!inside) return;
  if (mean_sources) {  // Monodepth2's avg_reprojection: warped average vs identity average
    best = warped_sum / static_cast<acc_t>(n_warped);
    arg = 0;
    if (n_cands > n_warped && identity_sum / static_cast<acc_t>(n_warped) < best) {
      best = identity_sum / static_cast<acc_t>(n_warped);
      arg = n_warped;
    }
  }
  loss[(b * H + h) * W + w] = best;
  winner[(b * H + h) * W + w] = arg;
}

template <typename scalar_t, typename acc_t>
__global__ void backward_kernel(const acc_t* __restrict__ grad_loss, const int64_t* __restrict__ winner,
                                StridedView4<const scalar_t> target, Views<const scalar_t, kMaxSources> warped,
                                Views<scalar_t, kMaxSources> grads, int64_t n_warped, int64_t C, Axis ah, Axis aw,
                                Window<acc_t> win, acc_t w_ssim, acc_t w_l1, bool mean_sources) {
  constexpr int IH = kTileH + 4, IW = kTileW + 4;  // taps of the outputs around the tile
  constexpr int PH = kTileH + 2, PW = kTileW + 2;  // outputs whose windows reach the tile
  __shared__ acc_t sx[IH][IW], sy[IH][IW];
  __shared__ acc_t weight[PH][PW];         // g * selection of each output, for all channels
  __shared__ acc_t coef[3][PH][PW];        // weight * dclamp * SSIM partials in mu_x, E[x^2], E[xy]
  const int64_t H = ah.n, W = aw.n, B = gridDim.z / n_warped;
  const int64_t b = blockIdx.z % B, s = blockIdx.z / B;
  const int64_t h0 = static_cast<int64_t>(blockIdx.y) * kTileH, w0 = static_cast<int64_t>(blockIdx.x) * kTileW;
  const int tid = threadIdx.y * kTileW + threadIdx.x;
  for (int i = tid; i < PH * PW; i += kTileW * kTileH) {
    const int64_t p_h = h0 - 1 + i / PW, p_w = w0 - 1 + i % PW;
    const bool in = p_h >= 0 && p_h < H && p_w >= 0 && p_w < W;
    const int64_t at = (b * H + p_h) * W + p_w;
    weight[i / PW][i % PW] = in ? grad_loss[at] * selected<acc_t>(winner[at], s, n_warped, mean_sources) : acc_t(0);
  }
  const int64_t q_h = h0 + threadIdx.y, q_w = w0 + threadIdx.x;
  const bool inside = q_h < H && q_w < W;
  for (int64_t c = 0; c < C; ++c) {
    __syncthreads();  // weights written / the previous channel's coefficients consumed
    load_tile(sx, warped.v[s], b, c, h0 - 2, w0 - 2, ah, aw);
    load_tile(sy, target, b, c, h0 - 2, w0 - 2, ah, aw);
    __syncthreads();
    for (int i = tid; i < PH * PW; i += kTileW * kTileH) {
      const int pr = i / PW, pc = i % PW;
      const acc_t wt = weight[pr][pc];
      ssim::SsimTerms<acc_t> t{0, 0, 0, 0, 0};
      if (wt != acc_t(0)) t = box3_terms(sx, sy, pr + 1, pc + 1);
      const acc_t k = wt * w_ssim * ssim::dssim(t.ssim).slope;
      coef[0][pr][pc] = k * t.d_mx;
      coef[1][pr][pc] = k * t.d_sq;
      coef[2][pr][pc] = k * t.d_xy;
    }
    __syncthreads();
    if (!inside) continue;
    acc_t f[3] = {0, 0, 0};
#pragma unroll
    for (int i = 0; i < 3; ++i) {
      const acc_t wh = ah.weight(win, q_h - 1 + i, q_h);
#pragma unroll
      for (int j = 0; j < 3; ++j) {
        const acc_t wgt = wh * aw.weight(win, q_w - 1 + j, q_w);
#pragma unroll
        for (int n = 0; n < 3; ++n) f[n] += wgt * coef[n][threadIdx.y + i][threadIdx.x + j];
      }
    }
    const acc_t xq = sx[threadIdx.y + 2][threadIdx.x + 2], yq = sy[threadIdx.y + 2][threadIdx.x + 2];
    const acc_t diff = xq - yq;
    const acc_t sign = diff > acc_t(0) ? acc_t(1) : (diff < acc_t(0) ? acc_t(-1) : acc_t(0));
    const acc_t l1 = weight[threadIdx.y + 1][threadIdx.x + 1] * w_l1 * sign;
    grads.v[s](b, c, q_h, q_w) = static_cast<scalar_t>(f[0] + acc_t(2) * f[1] * xq + f[2] * yq + l1);
  }
}

template <typename T, int N>
Views<T, N> views_of(at::TensorList a, at::TensorList b = {}) {
  Views<T, N> out{};
  int i = 0;
  for (const auto& t : a) out.v[i++] = strided_view4<T>(t);
  for (const auto& t : b) out.v[i++] = strided_view4<T>(t);
  return out;
}

dim3 tiles(int64_t h, int64_t w, int64_t z) {
  DM_CHECK(z <= 65535, "min_reprojection on CUDA supports B * S <= 65535, got ", z);
  return dim3(static_cast<unsigned>((w + kTileW - 1) / kTileW), static_cast<unsigned>((h + kTileH - 1) / kTileH),
              static_cast<unsigned>(z));
}

std::tuple<at::Tensor, at::Tensor> forward_cuda(const at::Tensor& target, at::TensorList warped,
                                                at::TensorList sources, const at::Tensor& noise_in, double alpha,
                                                bool mean_sources) {
  check_forward(target, warped, sources, noise_in, alpha);
  const c10::cuda::CUDAGuard guard(target.device());
  const int64_t B = target.size(0), C = target.size(1), H = target.size(2), W = target.size(3);
  auto loss = at::empty({B, H, W}, target.options().dtype(at::toOpMathType(target.scalar_type())));
  auto winner = at::empty({B, H, W}, target.options().dtype(at::kLong));
  if (loss.numel() == 0) return {loss, winner};
  const auto noise = sources.empty() ? loss : noise_in.contiguous();  // unread without sources
  const Axis ah = ssim::make_axis(H, ssim::kReflect, 1), aw = ssim::make_axis(W, ssim::kReflect, 1);
  DM_DISPATCH_FLOATING_TYPES(target.scalar_type(), "min_reprojection_cuda", [&] {
    using acc_t = acc_type<scalar_t>;
    DM_LAUNCH((forward_kernel<scalar_t, acc_t>), tiles(H, W, B), dim3(kTileW, kTileH),
              strided_view4<const scalar_t>(target), (views_of<const scalar_t, 2 * kMaxSources>(warped, sources)),
              static_cast<int64_t>(warped.size()), static_cast<int64_t>(warped.size() + sources.size()),
              noise.data_ptr<acc_t>(), C, ah, aw, static_cast<acc_t>(alpha / C), static_cast<acc_t>((1 - alpha) / C),
              mean_sources, loss.data_ptr<acc_t>(), winner.data_ptr<int64_t>());
  });
  return {loss, winner};
}

std::vector<at::Tensor> backward_cuda(const at::Tensor& grad_loss_in, const at::Tensor& target, at::TensorList warped,
                                      const at::Tensor& winner_in, double alpha, bool mean_sources) {
  check_backward(grad_loss_in, target, warped, winner_in, alpha);
  const c10::cuda::CUDAGuard guard(target.device());
  std::vector<at::Tensor> grads;
  for (const auto& w : warped) grads.push_back(at::empty_like(w));
  if (target.numel() == 0) return grads;
  const auto grad_loss = grad_loss_in.contiguous();
  const auto winner = winner_in.contiguous();
  const int64_t B = target.size(0), C = target.size(1), H = target.size(2), W = target.size(3);
  const int64_t S = static_cast<int64_t>(warped.size());
  const Axis ah = ssim::make_axis(H, ssim::kReflect, 1), aw = ssim::make_axis(W, ssim::kReflect, 1);
  DM_DISPATCH_FLOATING_TYPES(target.scalar_type(), "min_reprojection_backward_cuda", [&] {
    using acc_t = acc_type<scalar_t>;
    DM_LAUNCH((backward_kernel<scalar_t, acc_t>), tiles(H, W, B * S), dim3(kTileW, kTileH),
              grad_loss.data_ptr<acc_t>(), winner.data_ptr<int64_t>(), strided_view4<const scalar_t>(target),
              (views_of<const scalar_t, kMaxSources>(warped)), (views_of<scalar_t, kMaxSources>(grads)), S, C, ah, aw,
              ssim::make_window<acc_t>(ssim::kBox3), static_cast<acc_t>(alpha / C),
              static_cast<acc_t>((1 - alpha) / C), mean_sources);
  });
  return grads;
}

}  // namespace

TORCH_LIBRARY_IMPL(depthmetric, CUDA, m) {
  m.impl("min_reprojection", &forward_cuda);
  m.impl("_min_reprojection_backward", &backward_cuda);
}

}  // namespace minrep
}  // namespace depthmetric
