// Host-only helpers that turn at::Tensor into the plain views the kernels take.
#pragma once

#include <ATen/core/Tensor.h>

#include "common/check.h"
#include "common/macros.h"

#include <initializer_list>

namespace depthmetric {

template <typename T, typename index_t = int64_t>
StridedView4<T, index_t> strided_view4(const at::Tensor& t) {
  TORCH_INTERNAL_ASSERT(t.dim() == 4);
  return {t.data_ptr<std::remove_const_t<T>>(), static_cast<index_t>(t.stride(0)),
          static_cast<index_t>(t.stride(1)), static_cast<index_t>(t.stride(2)), static_cast<index_t>(t.stride(3))};
}

// One past the largest element offset a strided tensor can address.
inline int64_t storage_extent(const at::Tensor& t) {
  int64_t extent = 1;
  for (int64_t d = 0; d < t.dim(); ++d) extent += (t.size(d) - 1) * t.stride(d);
  return t.numel() == 0 ? 0 : extent;
}

// int32 index math is safe when every extent, plus a grid stride, stays below 2^31.
inline bool fits_int32(std::initializer_list<int64_t> extents) {
  for (int64_t e : extents) {
    if (e > (int64_t{1} << 30)) return false;
  }
  return true;
}

// Checks shared by every op's CPU and CUDA entry points; the Python layer gives users friendlier errors
// first, these guard direct callers of torch.ops.depthmetric.*.
inline void check_floating(const at::Tensor& t, const char* name) {
  DM_CHECK(at::isFloatingType(t.scalar_type()), name, " must be a floating-point tensor, got ",
           t.scalar_type());
}

inline void check_dim(const at::Tensor& t, int64_t dim, const char* name) {
  DM_CHECK(t.dim() == dim, name, " must have ", dim, " dimensions, got shape ", shape_str(t.sizes()));
}

// t has exactly these sizes; `layout` names the dimensions for the message, e.g. "B,H,W".
inline void check_shape(const at::Tensor& t, c10::IntArrayRef sizes, const char* name, const char* layout) {
  DM_CHECK(t.sizes() == sizes, name, " must be ", layout, " = ", shape_str(sizes), ", got ", shape_str(t.sizes()));
}

inline void check_same_device(const at::Tensor& a, const at::Tensor& b, const char* name_a, const char* name_b) {
  DM_CHECK(a.device() == b.device(), name_a, " and ", name_b, " must be on the same device, got ",
           a.device(), " and ", b.device());
}

}  // namespace depthmetric
