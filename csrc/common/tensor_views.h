// Host-only helpers that turn torch::stable::Tensor into the plain views the kernels take, and the few
// allocations the kernels need (the stable API spells them longer).
#pragma once

#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include "common/check.h"
#include "common/dispatch.h"
#include "common/strided_view.h"

#include <initializer_list>
#include <type_traits>

namespace depthmetric {

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

}  // namespace depthmetric
