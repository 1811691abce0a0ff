// Host checks and allocations shared by the CPU and CUDA entry points of the bin heads (bin_expectation,
// log_binomial_expectation; inline: the CPU and CUDA kernels are two libraries).
#pragma once

#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <tuple>

#include "common/check.h"
#include "common/tensor_views.h"

namespace depthmetric {
namespace bin_softmax {

using torch::stable::Tensor;

// centres: B,K,h,w (h, w >= 1) with the dtype and device of `like` (the logits or p, named like_name).
inline void check_centres(const Tensor& centres, const Tensor& like, const char* like_name, int64_t B, int64_t K) {
  check_dim(centres, 4, "centers (B,K,h,w)");
  DM_CHECK(centres.size(0) == B && centres.size(1) == K && centres.size(2) >= 1 && centres.size(3) >= 1,
           "centers must be B,K,h,w with B,K = ", shape_str({B, K}), " and h, w >= 1, got ",
           shape_str(centres.sizes()));
  DM_CHECK(centres.scalar_type() == like.scalar_type(), "centers must have the dtype of ", like_name, " ",
           like.scalar_type(), ", got ", centres.scalar_type());
  check_same_device(like, centres, like_name, "centers");
}

// A per-pixel map (temperature, t) B,1,H,W in the accumulation dtype of `like`.
inline void check_pixel_map(const Tensor& map, const Tensor& like, const char* name, int64_t B, int64_t H, int64_t W) {
  check_shape(map, {B, 1, H, W}, name, "B,1,H,W");
  check_dtype(map, accumulate_dtype(like.scalar_type()), name);
  check_same_device(like, map, "input", name);
}

// The backward's grad (B,1,H,W, the output's dtype) and stats (2,B,H,W, the accumulation dtype).
inline void check_backward(const Tensor& grad, const Tensor& stats, const Tensor& like, int64_t B, int64_t H,
                           int64_t W) {
  check_shape(grad, {B, 1, H, W}, "grad", "B,1,H,W");
  check_dtype(grad, like.scalar_type(), "grad");
  check_same_device(like, grad, "input", "grad");
  check_shape(stats, {2, B, H, W}, "stats", "2,B,H,W");
  check_dtype(stats, accumulate_dtype(like.scalar_type()), "stats");
  check_same_device(like, stats, "input", "stats");
}

// depth (B,1,H,W), stats (2,B,H,W: lse and depth in the accumulation dtype) and probs (B,K,H,W, or empty).
inline std::tuple<Tensor, Tensor, Tensor> allocate_forward(const Tensor& like, int64_t B, int64_t K, int64_t H,
                                                           int64_t W, bool return_probs) {
  const ScalarType t = like.scalar_type();
  return {empty(like, {B, 1, H, W}, t), empty(like, {2, B, H, W}, accumulate_dtype(t)),
          return_probs ? empty(like, {B, K, H, W}, t) : empty(like, {0}, t)};
}

// A gradient, or an empty tensor when not needed. The kernels write every element of the ones they fill,
// but return before any pass for an empty image: the small gradients (centres, p, t) start zero-filled for
// that, the B,K,H,W one of the logits (empty with the image) uninitialised.
inline Tensor allocate_gradient(const Tensor& like, Sizes sizes, ScalarType dtype, bool needed, bool zero = true) {
  return needed ? (zero ? zeros(like, sizes, dtype) : empty(like, sizes, dtype)) : empty(like, {0}, dtype);
}

template <typename T>
StridedView4<T> view_or_none(const Tensor& t) {
  return t.numel() ? strided_view4<T>(t) : StridedView4<T>{nullptr, 0, 0, 0, 0};
}

}  // namespace bin_softmax
}  // namespace depthmetric
