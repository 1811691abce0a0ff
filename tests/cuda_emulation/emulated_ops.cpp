// The CUDA kernels of depthmetric, built for the host with the launch emulation of common/cuda_launch.cuh
// here: they register as torch.ops.depthmetric_emulated.* on CPU tensors, so tests compare their results
// with the CPU kernels on a machine without a GPU.
#include "common/cuda_launch.cuh"  // the emulation, before any depthmetric CUDA source

STABLE_TORCH_LIBRARY(depthmetric_emulated, m) {}

#include "depth_metric_sums/depth_metric_sums.cpp"
#include "depth_metric_sums/cuda/depth_metric_sums_kernel.cu"
#include "min_reprojection/min_reprojection.cpp"
#include "min_reprojection/cuda/min_reprojection_kernel.cu"
#include "multi_range_contrastive/multi_range_contrastive.cpp"
#include "multi_range_contrastive/cuda/multi_range_contrastive_kernel.cu"
#include "ssim/ssim.cpp"
#include "ssim/cuda/ssim_kernel.cu"
