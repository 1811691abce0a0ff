// Launch helpers for the CUDA kernels: one place for grid sizing, streams and launch checks.
#pragma once

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>

#include "common/launch_config.h"

namespace depthmetric {

// Grid-stride loops let a capped grid cover any n (int64 sizes included).
inline dim3 grid_for(int64_t n, int threads = kThreadsPerBlock) {
  const int64_t blocks = (n + threads - 1) / threads;
  const int64_t cap = static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->multiProcessorCount) * 32;
  return dim3(static_cast<unsigned>(std::max<int64_t>(1, std::min(blocks, cap))));
}

}  // namespace depthmetric

// Launch on the current stream and check the launch, the same way for every kernel.
#define DM_LAUNCH(KERNEL, GRID, BLOCK, ...)                                                 \
  do {                                                                                       \
    KERNEL<<<GRID, BLOCK, 0, at::cuda::getCurrentCUDAStream()>>>(__VA_ARGS__);               \
    C10_CUDA_KERNEL_LAUNCH_CHECK();                                                          \
  } while (0)
