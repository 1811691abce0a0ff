// Schema and shared input handling of depthmetric::ssim.
#include "ssim/ssim.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#include "common/tensor_views.h"

namespace depthmetric {
namespace ssim {

int window_radius(int64_t window) {
  DM_CHECK(window == kBox3 || window == kGauss11, "window must be 0 (box3) or 1 (gauss11), got ", window);
  return window == kBox3 ? 1 : kMaxRadius;
}

Geometry check_forward(const at::Tensor& x, const at::Tensor& y, int64_t window, int64_t padding) {
  check_floating(x, "x");
  check_dim(x, 4, "x (B,C,H,W)");
  check_shape(y, x.sizes(), "y", "x's B,C,H,W");
  DM_CHECK(x.scalar_type() == y.scalar_type(), "x and y must share a dtype, got ", x.scalar_type(), " and ",
           y.scalar_type());
  check_same_device(x, y, "x", "y");
  const int r = window_radius(window);
  return {r, make_axis(x.size(2), padding, r), make_axis(x.size(3), padding, r)};
}

void check_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& y, const at::Tensor& partials,
                    const Geometry& geo) {
  const auto B = x.size(0), C = x.size(1);
  check_shape(grad, {B, C, geo.h.n_out, geo.w.n_out}, "grad", "the SSIM map's B,C,H',W'");
  check_shape(partials, {kPartials, B, C, geo.h.n_out, geo.w.n_out}, "partials", "4,B,C,H',W'");
  const auto acc = at::toOpMathType(x.scalar_type());
  DM_CHECK(grad.scalar_type() == acc && partials.scalar_type() == acc,
           "grad and partials must have the accumulation dtype ", acc);
  check_same_device(x, grad, "x", "grad");
  check_same_device(x, partials, "x", "partials");
}

std::tuple<at::Tensor, at::Tensor> allocate_forward(const at::Tensor& x, const Geometry& geo, bool with_partials) {
  const auto opts = x.options().dtype(at::toOpMathType(x.scalar_type()));
  const auto B = x.size(0), C = x.size(1);
  return {at::empty({B, C, geo.h.n_out, geo.w.n_out}, opts),
          with_partials ? at::empty({kPartials, B, C, geo.h.n_out, geo.w.n_out}, opts) : at::empty({0}, opts)};
}

}  // namespace ssim
}  // namespace depthmetric

TORCH_LIBRARY_FRAGMENT(depthmetric, m) {
  // window: 0 box3, 1 gauss11; padding: 0 reflect, 1 same (zeros), 2 valid. partials holds, per output pixel,
  // the four derivatives of SSIM with respect to the window moments that backward needs; without
  // with_partials (no gradient wanted) it is empty and the forward writes the SSIM map alone.
  m.def(
      "ssim(Tensor x, Tensor y, int window, int padding, bool with_partials=True) -> (Tensor ssim, Tensor partials)");
  m.def(
      "_ssim_backward(Tensor grad, Tensor x, Tensor y, Tensor partials, int window, int padding) "
      "-> (Tensor grad_x, Tensor grad_y)");
}
