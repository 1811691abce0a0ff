// Host-side pieces shared by the CPU and CUDA entry points of depthmetric::bin_expectation (inline: the CPU
// and the CUDA kernels are built into separate libraries).
#pragma once

#include <torch/csrc/stable/tensor.h>

#include "bin_expectation/bin_expectation_math.h"
#include "common/bin_checks.h"

namespace depthmetric {
namespace bin_expectation {

using torch::stable::Tensor;

// logits B,K,H,W (K >= 1), centers B,K,h,w of its dtype, temperature B,1,H,W in the accumulation dtype.
inline void check_inputs(const Tensor& logits, const Tensor& centers, const Tensor& temperature) {
  check_floating(logits, "logits");
  check_dim(logits, 4, "logits (B,K,H,W)");
  DM_CHECK(logits.size(1) >= 1, "logits must have at least one bin, got shape ", shape_str(logits.sizes()));
  const int64_t B = logits.size(0), K = logits.size(1), H = logits.size(2), W = logits.size(3);
  bin_softmax::check_centres(centers, logits, "logits", B, K);
  bin_softmax::check_pixel_map(temperature, logits, "temperature", B, H, W);
}

// The source of the logits with the gradients' views (none where a gradient is empty: not wanted).
template <typename scalar_t>
TemperedLogits<scalar_t> source(const Tensor& logits, const Tensor& temperature, const Tensor* grad_logits = nullptr,
                                const Tensor* grad_temperature = nullptr) {
  using acc_t = acc_type<scalar_t>;
  TemperedLogits<scalar_t> s{strided_view4<const scalar_t>(logits), strided_view4<const acc_t>(temperature),
                             {nullptr, 0, 0, 0, 0}, {nullptr, 0, 0, 0, 0}};
  if (grad_logits) s.grad_logits = bin_softmax::view_or_none<scalar_t>(*grad_logits);
  if (grad_temperature) s.grad_temperature = bin_softmax::view_or_none<acc_t>(*grad_temperature);
  return s;
}

}  // namespace bin_expectation
}  // namespace depthmetric
