// Shared by the CPU and CUDA kernels: the dtype dispatch, the accumulation type, the host/device qualifier
// of the per-element math that is written once for both, and the few math helpers every op uses.
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

DM_HOST_DEVICE float dm_sqrt(float x) { return ::sqrtf(x); }
DM_HOST_DEVICE double dm_sqrt(double x) { return ::sqrt(x); }

// A depth value counts when it is finite and > 0 (NaN fails both comparisons): the metrics' ground truth and
// prediction, and both depths of a contrastive pair.
DM_HOST_DEVICE bool is_valid_depth(float d) { return d > 0.f && d <= FLT_MAX; }
DM_HOST_DEVICE bool is_valid_depth(double d) { return d > 0.0 && d <= DBL_MAX; }

}  // namespace depthmetric
