// Host-side pieces shared by the CPU and CUDA entry points of depthmetric::ssim.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

#include "ssim/ssim_math.h"

namespace depthmetric {
namespace ssim {

constexpr int64_t kPartials = 4;  // d_mx, d_my, d_sq, d_xy of SsimTerms, saved per output pixel

struct Geometry {
  int radius;
  Axis h, w;
};

int window_radius(int64_t window);
// Checks x and y (B,C,H,W, same shape, dtype and device) and the window/padding codes.
Geometry check_forward(const at::Tensor& x, const at::Tensor& y, int64_t window, int64_t padding);
void check_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& y, const at::Tensor& partials,
                    const Geometry& geo);
// ssim (B,C,H',W') and partials (4,B,C,H',W', or empty without with_partials), in the accumulation dtype.
std::tuple<at::Tensor, at::Tensor> allocate_forward(const at::Tensor& x, const Geometry& geo, bool with_partials);

}  // namespace ssim
}  // namespace depthmetric
