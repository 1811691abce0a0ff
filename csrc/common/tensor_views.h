// Host-only helpers that turn torch::stable::Tensor into the plain views the kernels take, the input
// checks every op shares, and the few allocations the kernels need (the stable API spells them longer).
#pragma once

#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include "common/check.h"
#include "common/macros.h"

#include <initializer_list>
#include <type_traits>

namespace depthmetric {

using torch::stable::Tensor;
using Sizes = torch::headeronly::IntHeaderOnlyArrayRef;

// The element pointer of t as T (const T: read-only); the dtype is checked against T.
template <typename T>
T* data_of(const Tensor& t) {
  if constexpr (std::is_const_v<T>) {
    return t.const_data_ptr<std::remove_const_t<T>>();
  } else {
    return t.mutable_data_ptr<T>();
  }
}

template <typename T, typename index_t = int64_t>
StridedView4<T, index_t> strided_view4(const Tensor& t) {
  DM_CHECK(t.dim() == 4, "internal: a 4-d view of a ", t.dim(), "-d tensor");
  return {data_of<T>(t), static_cast<index_t>(t.stride(0)), static_cast<index_t>(t.stride(1)),
          static_cast<index_t>(t.stride(2)), static_cast<index_t>(t.stride(3))};
}

// A new uninitialised (empty) or zeroed tensor of these sizes and dtype on like's device.
inline Tensor empty(const Tensor& like, Sizes sizes, ScalarType dtype) {
  return torch::stable::new_empty(like, sizes, dtype);
}
inline Tensor zeros(const Tensor& like, Sizes sizes, ScalarType dtype) {
  return torch::stable::new_zeros(like, sizes, dtype);
}

// One past the largest element offset a strided tensor can address.
inline int64_t storage_extent(const Tensor& t) {
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
inline void check_floating(const Tensor& t, const char* name) {
  DM_CHECK(is_floating(t.scalar_type()), name, " must be a floating-point tensor, got ", t.scalar_type());
}

inline void check_dtype(const Tensor& t, ScalarType dtype, const char* name) {
  DM_CHECK(t.scalar_type() == dtype, name, " must be ", dtype, ", got ", t.scalar_type());
}

inline void check_dim(const Tensor& t, int64_t dim, const char* name) {
  DM_CHECK(t.dim() == dim, name, " must have ", dim, " dimensions, got shape ", shape_str(t.sizes()));
}

// t has exactly these sizes; `layout` names the dimensions for the message, e.g. "B,H,W".
inline void check_shape(const Tensor& t, Sizes sizes, const char* name, const char* layout) {
  DM_CHECK(t.sizes().equals(sizes), name, " must be ", layout, " = ", shape_str(sizes), ", got ",
           shape_str(t.sizes()));
}

inline void check_same_device(const Tensor& a, const Tensor& b, const char* name_a, const char* name_b) {
  DM_CHECK(a.device() == b.device(), name_a, " and ", name_b, " must be on the same device, got ", a.device(),
           " and ", b.device());
}

}  // namespace depthmetric
