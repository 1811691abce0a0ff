// Host-side pieces shared by the CPU and CUDA entry points of depth_metric_sums.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

namespace depthmetric {
namespace dms {

// The crop window (rows r0:r1, cols c0:c1) and depth range, checked and unpacked.
struct Window {
  int64_t r0, r1, c0, c1;
  int64_t rows() const { return r1 - r0; }
  int64_t cols() const { return c1 - c0; }
};

Window check_inputs(const at::Tensor& pred, const at::Tensor& gt, const c10::optional<at::Tensor>& mask,
                    const c10::optional<at::Tensor>& scale, double min_depth, double max_depth,
                    at::IntArrayRef window);

}  // namespace dms
}  // namespace depthmetric
