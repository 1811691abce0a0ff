// Shared by the CPU and CUDA kernels: per-element math is written once in headers that compile for both.
// Only header-only torch is used here (torch/headeronly), so the built library needs no libtorch C++ symbol.
#pragma once

#include <torch/headeronly/core/Dispatch.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

#include <cfloat>
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define DM_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define DM_HOST_DEVICE inline
#endif

// Every kernel accepts float16, bfloat16, float32 and float64, with scalar_t bound to the element type;
// arithmetic runs in acc_type<scalar_t> (float32 for the 16-bit types and float32, float64 for float64).
// The body comes last (as in AT_DISPATCH), so it may hold unparenthesised commas (kernel launches).
#define DM_DISPATCH_FLOATING_TYPES(TYPE, NAME, ...)                                    \
  THO_DISPATCH_SWITCH(TYPE, NAME,                                                      \
                      THO_DISPATCH_CASE(torch::headeronly::ScalarType::Double, __VA_ARGS__) \
                      THO_DISPATCH_CASE(torch::headeronly::ScalarType::Float, __VA_ARGS__)  \
                      THO_DISPATCH_CASE(torch::headeronly::ScalarType::Half, __VA_ARGS__)   \
                      THO_DISPATCH_CASE(torch::headeronly::ScalarType::BFloat16, __VA_ARGS__))

namespace depthmetric {

using torch::headeronly::ScalarType;

template <typename scalar_t>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};
template <typename scalar_t>
using acc_type = typename AccType<scalar_t>::type;

// The dtype acc_type gives for a tensor's floating dtype: what every op's float outputs are stored in.
inline ScalarType accumulate_dtype(ScalarType t) {
  return t == ScalarType::Double ? ScalarType::Double : ScalarType::Float;
}

inline bool is_floating(ScalarType t) {
  return t == ScalarType::Float || t == ScalarType::Double || t == ScalarType::Half || t == ScalarType::BFloat16;
}

// Roll indexing with a shift already reduced to [0, n): one compare instead of an integer modulo.
template <typename index_t>
DM_HOST_DEVICE index_t roll_back(index_t i, index_t shift, index_t n) {  // index of torch.roll's source
  const index_t j = i - shift;
  return j < 0 ? j + n : j;
}
template <typename index_t>
DM_HOST_DEVICE index_t roll_forward(index_t i, index_t shift, index_t n) {  // inverse of roll_back
  const index_t j = i + shift;
  return j >= n ? j - n : j;
}
// A shift of any sign brought into [0, n) (n > 0), as Python's % does.
DM_HOST_DEVICE int64_t reduce_shift(int64_t shift, int64_t n) {
  const int64_t r = shift % n;
  return r < 0 ? r + n : r;
}

// A view of a 4-d tensor through its strides, so contiguous, channels_last and sliced inputs are read
// in place without a copy. index_t is int64 where a tensor can pass 2^31 elements; CUDA kernels use int32
// below that (half the registers per offset).
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

DM_HOST_DEVICE float dm_sqrt(float x) { return ::sqrtf(x); }
DM_HOST_DEVICE double dm_sqrt(double x) { return ::sqrt(x); }

// The spec's validity of a depth value: finite and > 0 (NaN fails both comparisons).
DM_HOST_DEVICE bool is_valid_depth(float d) { return d > 0.f && d <= FLT_MAX; }
DM_HOST_DEVICE bool is_valid_depth(double d) { return d > 0.0 && d <= DBL_MAX; }

}  // namespace depthmetric
