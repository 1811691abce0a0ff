// Stand-in for csrc/common/cuda_launch.cuh that runs a CUDA launch on the host: blocks one after another,
// the threads of a block as OS threads, __syncthreads as a std::barrier, __shared__ arrays as statics (one
// block at a time uses them) and __shfl_down_sync as an exchange through a per-warp buffer between two warp
// barriers (full warps, full mask). Exact for kernels that use only these (no other warp intrinsics, no
// atomics):
// tests/test_cuda_emulation.py checks their logic on a machine without a GPU. Found before csrc/ on the
// include path of the emulation build.
#pragma once

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/tensor.h>

#include <algorithm>

#include <barrier>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "common/launch_config.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __grid_constant__
#define __shared__ static

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
inline thread_local dim3 threadIdx, blockIdx, gridDim, blockDim;
inline thread_local std::barrier<>* block_barrier = nullptr;

inline void __syncthreads() { block_barrier->arrive_and_wait(); }

struct EmulatedWarp {
  explicit EmulatedWarp(unsigned lanes) : barrier(lanes) {}
  std::barrier<> barrier;
  unsigned char lanes[32][8];  // one value per lane, up to 8 bytes
};
inline thread_local EmulatedWarp* thread_warp = nullptr;
inline thread_local unsigned thread_lane = 0;

template <typename T>
T __shfl_down_sync(unsigned /*mask: the whole warp*/, T value, int offset) {
  static_assert(sizeof(T) <= 8, "values up to 8 bytes");
  std::memcpy(thread_warp->lanes[thread_lane], &value, sizeof(T));
  thread_warp->barrier.arrive_and_wait();  // every lane has written
  T out = value;  // lanes past the end keep their own value, as on the GPU
  if (thread_lane + offset < 32) std::memcpy(&out, thread_warp->lanes[thread_lane + offset], sizeof(T));
  thread_warp->barrier.arrive_and_wait();  // every lane has read before the next exchange writes
  return out;
}

namespace depthmetric {

struct CudaDeviceGuard {  // the emulated kernels run on CPU tensors: no device to switch to
  explicit CudaDeviceGuard(const torch::stable::Tensor&) {}
};

inline dim3 grid_for(int64_t n, int threads = kThreadsPerBlock) {
  return dim3(static_cast<unsigned>(std::max<int64_t>(1, (n + threads - 1) / threads)));
}

template <typename Kernel>
void emulate_launch(dim3 grid, dim3 block, Kernel&& kernel) {
  const unsigned n_threads = block.x * block.y * block.z;
  for (unsigned bz = 0; bz < grid.z; ++bz) {
    for (unsigned by = 0; by < grid.y; ++by) {
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        std::barrier<> barrier(n_threads);
        std::vector<std::unique_ptr<EmulatedWarp>> warps;
        for (unsigned w = 0; w < n_threads; w += 32) {
          warps.push_back(std::make_unique<EmulatedWarp>(std::min(32u, n_threads - w)));
        }
        std::vector<std::thread> threads;
        for (unsigned t = 0; t < n_threads; ++t) {
          threads.emplace_back([&, t] {
            gridDim = grid;
            blockDim = block;
            blockIdx = dim3(bx, by, bz);
            threadIdx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
            block_barrier = &barrier;
            thread_warp = warps[t / 32].get();
            thread_lane = t % 32;
            kernel();
            barrier.arrive_and_drop();  // a finished thread no longer holds up the block's barriers
            thread_warp->barrier.arrive_and_drop();
          });
        }
        for (auto& thread : threads) thread.join();
      }
    }
  }
}

}  // namespace depthmetric

#define DM_LAUNCH(KERNEL, GRID, BLOCK, ...) \
  ::depthmetric::emulate_launch(GRID, BLOCK, [&] { KERNEL(__VA_ARGS__); })

// The schemas and the .cu kernels register in a namespace of their own, depthmetric_emulated, as CPU kernels
// (the real extension, loaded in the same process, owns depthmetric::*): tests call
// torch.ops.depthmetric_emulated.<op> and compare with torch.ops.depthmetric.<op>.
#undef STABLE_TORCH_LIBRARY_FRAGMENT
#define STABLE_TORCH_LIBRARY_FRAGMENT(ns, m) _STABLE_TORCH_LIBRARY_FRAGMENT(depthmetric_emulated, m, C10_UID)
#undef STABLE_TORCH_LIBRARY_IMPL
#define STABLE_TORCH_LIBRARY_IMPL(ns, k, m) _STABLE_TORCH_LIBRARY_IMPL(depthmetric_emulated, CPU, m, C10_UID)
