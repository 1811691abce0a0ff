// Input checks with messages built as text here: every number is formatted with std::to_string/snprintf,
// never streamed into an std::ostream. Streaming an integer into TORCH_CHECK's message crashed the process
// (inside std::ostream::_M_insert<long>) under torch 2.11 built with GCC 13, the lent H100's image, instead
// of raising; strings stream safely. DM_CHECK throws the std::runtime_error that STD_TORCH_CHECK throws
// (torch turns it into a Python RuntimeError), with only our message and no streamed line number.
#pragma once

#include <torch/csrc/stable/device.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/HeaderOnlyArrayRef.h>

#include <cstdio>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "common/dispatch.h"

namespace depthmetric {

inline std::string to_text(const char* s) { return s; }
inline std::string to_text(const std::string& s) { return s; }
inline std::string to_text(torch::headeronly::ScalarType t) { return torch::headeronly::toString(t); }
inline std::string to_text(const torch::stable::Device& d) {
  const bool cuda = d.type() == torch::headeronly::DeviceType::CUDA;
  std::string out = cuda ? "cuda" : (d.type() == torch::headeronly::DeviceType::CPU ? "cpu" : "device");
  return d.has_index() && cuda ? out + ":" + std::to_string(d.index()) : out;
}

inline std::string to_text(torch::headeronly::IntHeaderOnlyArrayRef sizes) {  // "[2, 3, 4]"
  std::string out = "[";
  for (size_t i = 0; i < sizes.size(); ++i) out += (i ? ", " : "") + std::to_string(sizes[i]);
  return out + "]";
}

template <typename T, typename = std::enable_if_t<std::is_arithmetic_v<T>>>
std::string to_text(T v) {
  if constexpr (std::is_same_v<T, bool>) {
    return v ? "true" : "false";
  } else if constexpr (std::is_floating_point_v<T>) {
    char buffer[32];
    std::snprintf(buffer, sizeof(buffer), "%g", static_cast<double>(v));
    return buffer;
  } else {
    return std::to_string(v);
  }
}

template <typename... Args>
std::string message(const Args&... args) {
  std::string out;
  (out += ... += to_text(args));
  return out;
}

inline std::string shape_str(torch::headeronly::IntHeaderOnlyArrayRef sizes) { return to_text(sizes); }

}  // namespace depthmetric

// Raises RuntimeError(message) when cond is false; the message is formatted only then.
#define DM_CHECK(cond, ...)                                                   \
  do {                                                                        \
    if (!(cond)) throw std::runtime_error(::depthmetric::message(__VA_ARGS__)); \
  } while (0)

namespace depthmetric {

using torch::stable::Tensor;
using Sizes = torch::headeronly::IntHeaderOnlyArrayRef;

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
