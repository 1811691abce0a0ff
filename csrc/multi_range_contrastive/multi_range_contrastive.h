// Host-side pieces shared by the CPU and CUDA entry points of multi_range_contrastive.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace depthmetric {
namespace mrc {

struct ForwardOutputs {
  at::Tensor loss;   // B,H,W: per-pixel sum of pair losses over samples (accumulation dtype)
  at::Tensor count;  // B,H,W int32: counted (positive + negative) pairs per pixel
  at::Tensor coef;   // N,B,H,W: per-pair gradient coefficient, saved for backward
};

// Checks shared by both backends. reduced_shifts also brings every shift into [0, size), so the kernels
// wrap indices with one compare.
void check_forward(const at::Tensor& features, const at::Tensor& depth);
at::Tensor reduced_shifts(const at::Tensor& features, const at::Tensor& shifts);
ForwardOutputs allocate_forward(const at::Tensor& features, int64_t n_shifts);
void check_backward(const at::Tensor& grad_loss, const at::Tensor& features, const at::Tensor& shifts,
                    const at::Tensor& coef);

}  // namespace mrc
}  // namespace depthmetric
