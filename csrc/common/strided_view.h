// A view of a 4-d tensor through its strides, so contiguous, channels_last and sliced inputs are read in
// place without a copy. index_t is int64 where a tensor can pass 2^31 elements; CUDA kernels use int32
// below that (half the registers per offset). common/tensor_views.h makes one from a tensor.
#pragma once

#include "common/dispatch.h"

namespace depthmetric {

template <typename T, typename index_t = int64_t>
struct StridedView4 {
  T* data;
  index_t s0, s1, s2, s3;
  DM_HOST_DEVICE index_t offset(index_t i0, index_t i1, index_t i2, index_t i3) const {
    return i0 * s0 + i1 * s1 + i2 * s2 + i3 * s3;
  }
  DM_HOST_DEVICE T& operator()(index_t i0, index_t i1, index_t i2, index_t i3) const {
    return data[offset(i0, i1, i2, i3)];
  }
};

}  // namespace depthmetric
