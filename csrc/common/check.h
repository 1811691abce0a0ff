// Input checks with messages built as text here: every number is formatted with std::to_string/snprintf,
// never streamed into an std::ostream. Streaming an integer into TORCH_CHECK's message crashed the process
// (inside std::ostream::_M_insert<long>) under torch 2.11 built with GCC 13, the lent H100's image, instead
// of raising; strings stream safely.
#pragma once

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>

#include <cstdio>
#include <string>
#include <type_traits>

namespace depthmetric {

inline std::string to_text(const char* s) { return s; }
inline std::string to_text(const std::string& s) { return s; }
inline std::string to_text(c10::ScalarType t) { return c10::toString(t); }
inline std::string to_text(const c10::Device& d) { return d.str(); }

inline std::string to_text(c10::IntArrayRef sizes) {  // "[2, 3, 4]"
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

inline std::string shape_str(c10::IntArrayRef sizes) { return to_text(sizes); }

}  // namespace depthmetric

// TORCH_CHECK with the message formatted by depthmetric::message (built only when the check fails).
#define DM_CHECK(cond, ...) TORCH_CHECK(cond, ::depthmetric::message(__VA_ARGS__))
