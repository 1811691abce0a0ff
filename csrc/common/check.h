// Input checks with messages built as text here: every number is formatted with std::to_string/snprintf,
// never streamed into an std::ostream. Streaming an integer into TORCH_CHECK's message crashed the process
// (inside std::ostream::_M_insert<long>) under torch 2.11 built with GCC 13, the lent H100's image, instead
// of raising; strings stream safely. DM_CHECK throws the std::runtime_error that STD_TORCH_CHECK throws
// (torch turns it into a Python RuntimeError), with only our message and no streamed line number.
#pragma once

#include <torch/csrc/stable/device.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/HeaderOnlyArrayRef.h>

#include <cstdio>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

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
