// Host-only helpers that turn at::Tensor into the plain views the kernels take.
#pragma once

#include <ATen/core/Tensor.h>

#include "common/macros.h"

namespace depthmetric {

template <typename T>
StridedView4<T> strided_view4(const at::Tensor& t) {
  TORCH_INTERNAL_ASSERT(t.dim() == 4);
  return {t.data_ptr<std::remove_const_t<T>>(), t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

// Checks shared by every op's CPU and CUDA entry points; the Python layer gives users friendlier errors
// first, these guard direct callers of torch.ops.depthmetric.*.
inline void check_floating(const at::Tensor& t, const char* name) {
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), name, " must be a floating-point tensor, got ",
              t.scalar_type());
}

inline void check_dim(const at::Tensor& t, int64_t dim, const char* name) {
  TORCH_CHECK(t.dim() == dim, name, " must have ", dim, " dimensions, got shape ", t.sizes());
}

inline void check_same_device(const at::Tensor& a, const at::Tensor& b, const char* name_a, const char* name_b) {
  TORCH_CHECK(a.device() == b.device(), name_a, " and ", name_b, " must be on the same device, got ",
              a.device(), " and ", b.device());
}

}  // namespace depthmetric
