// Launch settings that need no CUDA headers, shared by common/cuda_launch.cuh and by the host stand-in of
// it that tests/cuda_emulation builds the kernels with.
#pragma once

#include <cstdint>

namespace depthmetric {

constexpr int kThreadsPerBlock = 256;

// Runs body(index_t{}) with int32 index math when the sizes allow it, int64 otherwise.
template <typename Body>
void with_index_type(bool use_int32, Body&& body) {
  if (use_int32) {
    body(int32_t{});
  } else {
    body(int64_t{});
  }
}

}  // namespace depthmetric
