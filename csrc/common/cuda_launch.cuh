// Launch helpers for the CUDA kernels: one place for the device guard, grid sizing, the current stream and
// launch checks. Only the stable C shim and the CUDA runtime are used (nvcc gets -DUSE_CUDA, which
// declares the shim's CUDA entry points).
#pragma once

#include <cuda_runtime.h>
#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/tensor.h>

#include <algorithm>
#include <string>

#include "common/check.h"
#include "common/launch_config.h"

#ifndef DEPTHMETRIC_CUDA_ARCHS
#define DEPTHMETRIC_CUDA_ARCHS ""
#endif

namespace depthmetric {

// Makes t's GPU the current device for the scope (the caller's current device is restored after).
class CudaDeviceGuard {
 public:
  explicit CudaDeviceGuard(const torch::stable::Tensor& t) : guard_(t.get_device_index()) {}

 private:
  torch::stable::accelerator::DeviceGuard guard_;
};

inline int current_device() {
  int device = 0;
  const cudaError_t error = cudaGetDevice(&device);
  DM_CHECK(error == cudaSuccess, "cudaGetDevice failed: ", cudaGetErrorString(error));
  return device;
}

// torch's current stream of the current device, so kernels order with the caller's other work.
inline cudaStream_t current_stream() {
  void* stream = nullptr;
  DM_CHECK(aoti_torch_get_current_cuda_stream(current_device(), &stream) == AOTI_TORCH_SUCCESS,
           "could not get torch's current CUDA stream");
  return static_cast<cudaStream_t>(stream);
}

// Grid-stride loops let a capped grid cover any n (int64 sizes included).
inline dim3 grid_for(int64_t n, int threads = kThreadsPerBlock) {
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, current_device());
  const int64_t blocks = (n + threads - 1) / threads;
  const int64_t cap = static_cast<int64_t>(std::max(sms, 1)) * 32;
  return dim3(static_cast<unsigned>(std::max<int64_t>(1, std::min(blocks, cap))));
}

// Raises on a failed launch; a GPU this build has no kernel for gets the fix, not CUDA's bare message.
inline void check_launch(const char* kernel) {
  const cudaError_t error = cudaGetLastError();
  if (error == cudaSuccess) return;
  if (error == cudaErrorNoKernelImageForDevice || error == cudaErrorInvalidDeviceFunction) {
    cudaDeviceProp prop{};
    cudaGetDeviceProperties(&prop, current_device());
    const std::string cc = std::to_string(prop.major) + "." + std::to_string(prop.minor);
    throw std::runtime_error(message(
        "depthmetric's CUDA kernels were built for TORCH_CUDA_ARCH_LIST=\"", DEPTHMETRIC_CUDA_ARCHS,
        "\", which does not cover this GPU (", prop.name, ", compute capability ", cc,
        "); rebuild with TORCH_CUDA_ARCH_LIST=\"", cc, "\" pip install --no-build-isolation . (", kernel, ": ",
        cudaGetErrorString(error), ")"));
  }
  throw std::runtime_error(message(kernel, " failed to launch: ", cudaGetErrorString(error)));
}

}  // namespace depthmetric

// Launch on the current stream and check the launch, the same way for every kernel.
#define DM_LAUNCH(KERNEL, GRID, BLOCK, ...)                                        \
  do {                                                                             \
    KERNEL<<<GRID, BLOCK, 0, ::depthmetric::current_stream()>>>(__VA_ARGS__);      \
    ::depthmetric::check_launch(#KERNEL);                                          \
  } while (0)
