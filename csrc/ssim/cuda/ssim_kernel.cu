// CUDA kernels of depthmetric::ssim. One block per tile of one B,C plane: the tile and its window halo go
// to shared memory once, the separable window runs as a horizontal then a vertical pass there, and the
// forward writes only the SSIM and (when a backward follows) four partials per pixel. The backward is the
// same in transpose: each thread gathers the coefficients (grad x partial) of every output whose window
// covers its input pixel, with the per-axis weights of ssim::Axis (reflection folded back exactly), so no
// atomics are needed.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>

#include <tuple>
#include <type_traits>

#include "common/cuda_launch.cuh"
#include "common/tensor_views.h"
#include "ssim/ssim.h"

namespace depthmetric {
namespace ssim {
namespace {

constexpr int kTileW = 32;
// Tile height: 16 rows for float32 accumulation, 8 for float64 (keeps static shared memory under 48 KB).
// The gauss11 float64 backward's 41.6 KB of tiles then fit 3 blocks of 256 a SM at sm_80 (164 KB: 37.5%
// theoretical occupancy), 5 at sm_90 (62.5%); smaller tiles would spend more of their loads on the halo.
template <typename acc_t>
constexpr int tile_h() {
  return sizeof(acc_t) == 8 ? 8 : 16;
}

template <typename scalar_t, typename acc_t, int R>
__global__ void forward_kernel(StridedView4<const scalar_t> x, StridedView4<const scalar_t> y, int64_t C,
                               Axis ah, Axis aw, Window<acc_t> win, acc_t* __restrict__ out,
                               acc_t* __restrict__ partials, int64_t plane) {
  constexpr int TH = tile_h<acc_t>(), IH = TH + 2 * R, IW = kTileW + 2 * R;
  __shared__ acc_t sx[IH][IW], sy[IH][IW];
  __shared__ acc_t hs[5][IH][kTileW];
  const int64_t bc = blockIdx.z, b = bc / C, c = bc % C;
  const int64_t p_h0 = static_cast<int64_t>(blockIdx.y) * TH, p_w0 = static_cast<int64_t>(blockIdx.x) * kTileW;
  const int tid = threadIdx.y * kTileW + threadIdx.x, nthreads = kTileW * TH;

  // Tap positions of the tile: output p reads p + offset + d, d in [-R, R].
  for (int i = tid; i < IH * IW; i += nthreads) {
    const int r = i / IW, col = i % IW;
    const int64_t sh = ah.source(p_h0 + ah.offset - R + r), sw = aw.source(p_w0 + aw.offset - R + col);
    const bool in = sh >= 0 && sw >= 0;
    sx[r][col] = in ? static_cast<acc_t>(x(b, c, sh, sw)) : acc_t(0);
    sy[r][col] = in ? static_cast<acc_t>(y(b, c, sh, sw)) : acc_t(0);
  }
  __syncthreads();
  for (int i = tid; i < IH * kTileW; i += nthreads) {
    const int r = i / kTileW, col = i % kTileW;
    acc_t m[5] = {0, 0, 0, 0, 0};
#pragma unroll
    for (int k = 0; k <= 2 * R; ++k) {
      const acc_t w = win.w[k], vx = sx[r][col + k], vy = sy[r][col + k];
      m[0] += w * vx;
      m[1] += w * vy;
      m[2] += w * vx * vx;
      m[3] += w * vy * vy;
      m[4] += w * vx * vy;
    }
#pragma unroll
    for (int f = 0; f < 5; ++f) hs[f][r][col] = m[f];
  }
  __syncthreads();
  const int64_t p_h = p_h0 + threadIdx.y, p_w = p_w0 + threadIdx.x;
  if (p_h >= ah.n_out || p_w >= aw.n_out) return;
  acc_t m[5] = {0, 0, 0, 0, 0};
#pragma unroll
  for (int k = 0; k <= 2 * R; ++k) {
#pragma unroll
    for (int f = 0; f < 5; ++f) m[f] += win.w[k] * hs[f][threadIdx.y + k][threadIdx.x];
  }
  const auto t = ssim_terms(Moments<acc_t>{m[0], m[1], m[2], m[3], m[4]});
  const int64_t at = (bc * ah.n_out + p_h) * aw.n_out + p_w;
  out[at] = t.ssim;
  if (partials == nullptr) return;  // no backward follows
  partials[at] = t.d_mx;
  partials[plane + at] = t.d_my;
  partials[2 * plane + at] = t.d_sq;
  partials[3 * plane + at] = t.d_xy;
}

// win is __grid_constant__: Axis::weight indexes its taps at run time, which read the kernel parameter in
// place instead of copying it to a per-thread stack frame (48 bytes float32, 96 float64 before). The reads
// take a few registers: at sm_90 box3's float32 kernel went from 32 to 36 (3 blocks of 512 a SM instead of 4:
// 75% theoretical occupancy instead of 100%). Launch bounds that held it at 32 made ptxas take more registers
// in the other instantiations (gauss11 float32 up to 64), and the window in shared memory cost gauss11 a block.
template <typename scalar_t, typename acc_t, int R>
__global__ void backward_kernel(StridedView4<const acc_t> grad, const acc_t* __restrict__ partials, int64_t plane,
                                StridedView4<const scalar_t> x, StridedView4<const scalar_t> y, int64_t C, Axis ah,
                                Axis aw, const __grid_constant__ Window<acc_t> win, StridedView4<scalar_t> grad_x,
                                StridedView4<scalar_t> grad_y, bool need_x, bool need_y) {
  constexpr int TH = tile_h<acc_t>(), IH = TH + 2 * R, IW = kTileW + 2 * R;
  __shared__ acc_t sg[kPartials][IH][IW];
  __shared__ acc_t hs[kPartials][IH][kTileW];
  const int64_t bc = blockIdx.z, b = bc / C, c = bc % C;
  const int64_t q_h0 = static_cast<int64_t>(blockIdx.y) * TH, q_w0 = static_cast<int64_t>(blockIdx.x) * kTileW;
  // Outputs that can read the tile: [q - offset - R, q - offset + R] on each axis.
  const int64_t p_h0 = q_h0 - ah.offset - R, p_w0 = q_w0 - aw.offset - R;
  const int tid = threadIdx.y * kTileW + threadIdx.x, nthreads = kTileW * TH;

  for (int i = tid; i < IH * IW; i += nthreads) {
    const int64_t p_h = p_h0 + i / IW, p_w = p_w0 + i % IW;
    const bool in = p_h >= 0 && p_h < ah.n_out && p_w >= 0 && p_w < aw.n_out;
    const int64_t at = (bc * ah.n_out + p_h) * aw.n_out + p_w;
    const acc_t g = in ? grad(b, c, p_h, p_w) : acc_t(0);
#pragma unroll
    for (int f = 0; f < kPartials; ++f) sg[f][i / IW][i % IW] = in ? g * partials[f * plane + at] : acc_t(0);
  }
  __syncthreads();
  for (int i = tid; i < IH * kTileW; i += nthreads) {
    const int r = i / kTileW, col = i % kTileW;
    const int64_t q_w = q_w0 + col;
    acc_t s[kPartials] = {0, 0, 0, 0};
#pragma unroll
    for (int k = 0; k <= 2 * R; ++k) {
      const acc_t w = aw.weight(win, p_w0 + col + k, q_w);
#pragma unroll
      for (int f = 0; f < kPartials; ++f) s[f] += w * sg[f][r][col + k];
    }
#pragma unroll
    for (int f = 0; f < kPartials; ++f) hs[f][r][col] = s[f];
  }
  __syncthreads();
  const int64_t q_h = q_h0 + threadIdx.y, q_w = q_w0 + threadIdx.x;
  if (q_h >= ah.n || q_w >= aw.n) return;
  acc_t s[kPartials] = {0, 0, 0, 0};
#pragma unroll
  for (int k = 0; k <= 2 * R; ++k) {
    const acc_t w = ah.weight(win, p_h0 + threadIdx.y + k, q_h);
#pragma unroll
    for (int f = 0; f < kPartials; ++f) s[f] += w * hs[f][threadIdx.y + k][threadIdx.x];
  }
  const acc_t xq = static_cast<acc_t>(x(b, c, q_h, q_w)), yq = static_cast<acc_t>(y(b, c, q_h, q_w));
  if (need_x) grad_x(b, c, q_h, q_w) = static_cast<scalar_t>(s[0] + acc_t(2) * s[2] * xq + s[3] * yq);
  if (need_y) grad_y(b, c, q_h, q_w) = static_cast<scalar_t>(s[1] + acc_t(2) * s[2] * yq + s[3] * xq);
}

// Calls f(std::integral_constant<int, R>) for the window's radius.
template <typename F>
void with_radius(int radius, F&& f) {
  if (radius == 1) {
    f(std::integral_constant<int, 1>{});
  } else {
    f(std::integral_constant<int, kMaxRadius>{});
  }
}

dim3 tiles(int64_t h, int64_t w, int64_t planes, int th) {
  check_grid_dim("ssim", "B*C planes", planes);
  return dim3(static_cast<unsigned>((w + kTileW - 1) / kTileW), static_cast<unsigned>((h + th - 1) / th),
              static_cast<unsigned>(planes));
}

std::tuple<Tensor, Tensor> forward_cuda(const Tensor& x, const Tensor& y, int64_t window, int64_t padding,
                                        bool with_partials) {
  const auto geo = check_forward(x, y, window, padding);
  const CudaDeviceGuard guard(x);
  auto [out, partials] = allocate_forward(x, geo, with_partials);
  if (out.numel() == 0) return {out, partials};
  DM_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ssim_cuda", [&] {
    using acc_t = acc_type<scalar_t>;
    constexpr int TH = tile_h<acc_t>();
    with_radius(geo.radius, [&](auto r) {
      constexpr int R = decltype(r)::value;
      DM_LAUNCH((forward_kernel<scalar_t, acc_t, R>), tiles(geo.h.n_out, geo.w.n_out, x.size(0) * x.size(1), TH),
                dim3(kTileW, TH), strided_view4<const scalar_t>(x), strided_view4<const scalar_t>(y), x.size(1),
                geo.h, geo.w, make_window<acc_t>(window), data_of<acc_t>(out),
                with_partials ? data_of<acc_t>(partials) : nullptr, out.numel());
    });
  });
  return {out, partials};
}

std::tuple<Tensor, Tensor> backward_cuda(const Tensor& grad, const Tensor& x, const Tensor& y,
                                         const Tensor& partials_in, int64_t window, int64_t padding, bool need_x,
                                         bool need_y) {
  const auto geo = check_forward(x, y, window, padding);
  check_backward(grad, x, y, partials_in, geo, /*can_recompute=*/false);
  const CudaDeviceGuard guard(x);
  const auto partials = torch::stable::contiguous(partials_in);
  auto grad_x = allocate_gradient(x, need_x), grad_y = allocate_gradient(y, need_y);
  if (x.numel() == 0 || !(need_x || need_y)) return {grad_x, grad_y};
  DM_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ssim_backward_cuda", [&] {
    using acc_t = acc_type<scalar_t>;
    constexpr int TH = tile_h<acc_t>();
    with_radius(geo.radius, [&](auto r) {
      constexpr int R = decltype(r)::value;
      // grad is read through its strides: the gradient of a mean arrives as an expanded scalar.
      DM_LAUNCH((backward_kernel<scalar_t, acc_t, R>), tiles(geo.h.n, geo.w.n, x.size(0) * x.size(1), TH),
                dim3(kTileW, TH), strided_view4<const acc_t>(grad), data_of<const acc_t>(partials), grad.numel(),
                strided_view4<const scalar_t>(x), strided_view4<const scalar_t>(y), x.size(1), geo.h, geo.w,
                make_window<acc_t>(window), gradient_view<scalar_t>(grad_x), gradient_view<scalar_t>(grad_y), need_x,
                need_y);
    });
  });
  return {grad_x, grad_y};
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(depthmetric, CUDA, m) {
  m.impl("ssim", TORCH_BOX(&forward_cuda));
  m.impl("_ssim_backward", TORCH_BOX(&backward_cuda));
}

}  // namespace ssim
}  // namespace depthmetric
