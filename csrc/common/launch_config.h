// Launch settings that need no CUDA headers, shared by common/cuda_launch.cuh and by the host stand-in of
// it that tests/cuda_emulation builds the kernels with.
#pragma once

#include <cstdint>

#include "common/check.h"

namespace depthmetric {

constexpr int kThreadsPerBlock = 256;

// CUDA's limit on gridDim.y and gridDim.z, where the kernels put their planes or images.
constexpr int64_t kMaxGridDim = 65535;

// Raises unless n blocks (n `what`, e.g. "B*C planes") fit a grid's y or z dimension.
inline void check_grid_dim(const char* op, const char* what, int64_t n) {
  DM_CHECK(n <= kMaxGridDim, op, " on CUDA supports at most ", kMaxGridDim, " ", what, ", got ", n);
}

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
