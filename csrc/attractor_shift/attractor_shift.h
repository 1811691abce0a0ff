// Host-side pieces shared by the CPU and CUDA entry points of depthmetric::attractor_shift (inline: the CPU
// and the CUDA kernels are built into separate libraries).
#pragma once

#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <cmath>
#include <tuple>

#include "attractor_shift/attractor_shift_math.h"
#include "common/check.h"
#include "common/tensor_views.h"

namespace depthmetric {
namespace attractor_shift {

using torch::stable::Tensor;

// centers (B,K,h,w) and attractors (B,A,h,w: the same B,h,w, dtype and device), the kind, gamma >= 1, a finite
// alpha >= 0, and at least one attractor to average.
inline void check_inputs(const Tensor& centers, const Tensor& attractors, double alpha, int64_t gamma, int64_t kind,
                         bool mean) {
  check_floating(centers, "centers");
  check_dim(centers, 4, "centers (B,K,h,w)");
  check_dim(attractors, 4, "attractors (B,A,h,w)");
  check_shape(attractors, {centers.size(0), attractors.size(1), centers.size(2), centers.size(3)}, "attractors",
              "B,A,h,w with the centers' B,h,w");
  DM_CHECK(attractors.scalar_type() == centers.scalar_type(), "attractors must have the centers' dtype ",
           centers.scalar_type(), ", got ", attractors.scalar_type());
  check_same_device(centers, attractors, "centers", "attractors");
  DM_CHECK(kind == kInv || kind == kExp, "kind must be 0 (inv) or 1 (exp), got ", kind);
  DM_CHECK(gamma >= 1, "gamma must be a positive integer, got ", gamma);
  DM_CHECK(std::isfinite(alpha) && alpha >= 0, "alpha must be a finite number >= 0, got ", alpha);
  DM_CHECK(!mean || attractors.size(1) >= 1, "attractors must hold at least one attractor (A >= 1) to average, got ",
           shape_str(attractors.sizes()));
}

inline void check_backward(const Tensor& grad, const Tensor& centers, const Tensor& attractors, double alpha,
                           int64_t gamma, int64_t kind, bool mean) {
  check_inputs(centers, attractors, alpha, gamma, kind, mean);
  check_shape(grad, centers.sizes(), "grad", "the centers' B,K,h,w");
  check_dtype(grad, accumulate_dtype(centers.scalar_type()), "grad (the accumulation dtype)");
  check_same_device(centers, grad, "centers", "grad");
}

// The shifted centres, B,K,h,w in the accumulation dtype (contiguous, uninitialised).
inline Tensor allocate_output(const Tensor& centers) {
  return empty(centers, {centers.size(0), centers.size(1), centers.size(2), centers.size(3)},
               accumulate_dtype(centers.scalar_type()));
}

// The gradients of centers and attractors, contiguous, in their dtype (uninitialised).
inline std::tuple<Tensor, Tensor> allocate_gradients(const Tensor& centers, const Tensor& attractors) {
  const auto like = [](const Tensor& t) {
    return empty(t, {t.size(0), t.size(1), t.size(2), t.size(3)}, t.scalar_type());
  };
  return {like(centers), like(attractors)};
}

}  // namespace attractor_shift
}  // namespace depthmetric
