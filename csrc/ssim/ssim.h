// Host-side pieces shared by the CPU and CUDA entry points of depthmetric::ssim (inline: the CPU and the
// CUDA kernels are built into separate libraries).
#pragma once

#include <torch/csrc/stable/tensor.h>

#include <tuple>

#include "common/tensor_views.h"
#include "ssim/ssim_math.h"

namespace depthmetric {
namespace ssim {

constexpr int64_t kPartials = 4;  // d_mx, d_my, d_sq, d_xy of SsimTerms, saved per output pixel

struct Geometry {
  int radius;
  Axis h, w;
};

using torch::stable::Tensor;

inline int window_radius(int64_t window) {
  DM_CHECK(window == kBox3 || window == kGauss11, "window must be 0 (box3) or 1 (gauss11), got ", window);
  return window == kBox3 ? 1 : kMaxRadius;
}

// Checks x and y (B,C,H,W, same shape, dtype and device) and the window/padding codes.
inline Geometry check_forward(const Tensor& x, const Tensor& y, int64_t window, int64_t padding) {
  check_floating(x, "x");
  check_dim(x, 4, "x (B,C,H,W)");
  check_shape(y, x.sizes(), "y", "x's B,C,H,W");
  DM_CHECK(x.scalar_type() == y.scalar_type(), "x and y must share a dtype, got ", x.scalar_type(), " and ",
           y.scalar_type());
  check_same_device(x, y, "x", "y");
  const int r = window_radius(window);
  return {r, make_axis(x.size(2), padding, r), make_axis(x.size(3), padding, r)};
}

// The gradient of an input, or an empty tensor when it is not needed (see the schema).
inline Tensor allocate_gradient(const Tensor& like, bool needed) {
  return needed ? torch::stable::empty_like(like) : empty(like, {0}, like.scalar_type());
}

// A writable view of a gradient; none (null) for one not needed, which the kernels then do not write.
template <typename scalar_t>
StridedView4<scalar_t> gradient_view(const Tensor& grad) {
  return grad.numel() ? strided_view4<scalar_t>(grad) : StridedView4<scalar_t>{};
}

// can_recompute: the backward recomputes the partials when they are empty (the CPU kernel).
inline void check_backward(const Tensor& grad, const Tensor& x, const Tensor& y, const Tensor& partials,
                           const Geometry& geo, bool can_recompute) {
  const auto B = x.size(0), C = x.size(1);
  check_shape(grad, {B, C, geo.h.n_out, geo.w.n_out}, "grad", "the SSIM map's B,C,H',W'");
  if (!(can_recompute && partials.dim() == 1 && partials.numel() == 0)) {
    check_shape(partials, {kPartials, B, C, geo.h.n_out, geo.w.n_out}, "partials", "4,B,C,H',W'");
  }
  const auto acc = accumulate_dtype(x.scalar_type());
  DM_CHECK(grad.scalar_type() == acc && partials.scalar_type() == acc,
           "grad and partials must have the accumulation dtype ", acc);
  check_same_device(x, grad, "x", "grad");
  check_same_device(x, partials, "x", "partials");
}

// ssim (B,C,H',W') and partials (4,B,C,H',W', or empty without with_partials), in the accumulation dtype.
inline std::tuple<Tensor, Tensor> allocate_forward(const Tensor& x, const Geometry& geo, bool with_partials) {
  const auto acc = accumulate_dtype(x.scalar_type());
  const auto B = x.size(0), C = x.size(1);
  return {empty(x, {B, C, geo.h.n_out, geo.w.n_out}, acc),
          with_partials ? empty(x, {kPartials, B, C, geo.h.n_out, geo.w.n_out}, acc) : empty(x, {0}, acc)};
}

}  // namespace ssim
}  // namespace depthmetric
