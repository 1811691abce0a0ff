// Shared by the CPU and CUDA kernels: per-element math is written once in headers that compile for both.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#if defined(__CUDACC__)
#define DM_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define DM_HOST_DEVICE inline
#endif

// Every kernel accepts float16, bfloat16, float32 and float64; arithmetic runs in acc_t
// (float32 for the 16-bit types and float32, float64 for float64).
#define DM_DISPATCH_FLOATING_TYPES(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

namespace depthmetric {

template <typename scalar_t>
using acc_type = at::opmath_type<scalar_t>;

// Roll indexing with a shift already reduced to [0, n): one compare instead of an integer modulo.
DM_HOST_DEVICE int64_t roll_back(int64_t i, int64_t shift, int64_t n) {  // index of torch.roll's source
  const int64_t j = i - shift;
  return j < 0 ? j + n : j;
}
DM_HOST_DEVICE int64_t roll_forward(int64_t i, int64_t shift, int64_t n) {  // inverse of roll_back
  const int64_t j = i + shift;
  return j >= n ? j - n : j;
}

// A view of a 4-d tensor through its strides, so contiguous, channels_last and sliced inputs are read
// in place without a copy. Offsets are int64: feature maps can pass 2^31 elements.
template <typename T>
struct StridedView4 {
  T* data;
  int64_t s0, s1, s2, s3;
  DM_HOST_DEVICE int64_t offset(int64_t i0, int64_t i1, int64_t i2, int64_t i3) const {
    return i0 * s0 + i1 * s1 + i2 * s2 + i3 * s3;
  }
  DM_HOST_DEVICE T& operator()(int64_t i0, int64_t i1, int64_t i2, int64_t i3) const {
    return data[offset(i0, i1, i2, i3)];
  }
};

}  // namespace depthmetric

#include <cfloat>
#include <cmath>

namespace depthmetric {

DM_HOST_DEVICE float dm_sqrt(float x) { return ::sqrtf(x); }
DM_HOST_DEVICE double dm_sqrt(double x) { return ::sqrt(x); }

// The spec's validity of a depth value: finite and > 0 (NaN fails both comparisons).
DM_HOST_DEVICE bool is_valid_depth(float d) { return d > 0.f && d <= FLT_MAX; }
DM_HOST_DEVICE bool is_valid_depth(double d) { return d > 0.0 && d <= DBL_MAX; }

}  // namespace depthmetric
