// The CUDA kernels of depthmetric, built for the host with the launch emulation of common/cuda_launch.cuh here: the .cu entry points run on CPU tensors, so tests compare their
// results with the CPU kernels on a machine without a GPU.
#include <torch/extension.h>

#include "common/cuda_launch.cuh"  // the emulation, before any depthmetric CUDA source

#include "min_reprojection/min_reprojection.cpp"
#include "min_reprojection/cuda/min_reprojection_kernel.cu"
#include "multi_range_contrastive/multi_range_contrastive.cpp"
#include "multi_range_contrastive/cuda/multi_range_contrastive_kernel.cu"
#include "ssim/ssim.cpp"
#include "ssim/cuda/ssim_kernel.cu"
#include "depth_metric_sums/depth_metric_sums.cpp"
#include "depth_metric_sums/cuda/depth_metric_sums_kernel.cu"

std::tuple<at::Tensor, at::Tensor> min_reprojection(const at::Tensor& target, std::vector<at::Tensor> warped,
                                                    std::vector<at::Tensor> sources, const at::Tensor& noise,
                                                    double alpha, bool mean_sources) {
  return depthmetric::minrep::forward_cuda(target, warped, sources, noise, alpha, mean_sources);
}

std::vector<at::Tensor> min_reprojection_backward(const at::Tensor& grad_loss, const at::Tensor& target,
                                                  std::vector<at::Tensor> warped, const at::Tensor& winner,
                                                  double alpha, bool mean_sources) {
  return depthmetric::minrep::backward_cuda(grad_loss, target, warped, winner, alpha, mean_sources);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> multi_range_contrastive(const at::Tensor& features,
                                                                       const at::Tensor& depth,
                                                                       const at::Tensor& shifts, double r_p,
                                                                       std::vector<double> range_lo,
                                                                       std::vector<double> range_hi,
                                                                       std::vector<double> margins) {
  return depthmetric::mrc::forward_cuda(features, depth, shifts, r_p, range_lo, range_hi, margins);
}

at::Tensor multi_range_contrastive_backward(const at::Tensor& grad_loss, const at::Tensor& features,
                                            const at::Tensor& shifts, const at::Tensor& coef) {
  return depthmetric::mrc::backward_cuda(grad_loss, features, shifts, coef);
}

std::tuple<at::Tensor, at::Tensor> ssim(const at::Tensor& x, const at::Tensor& y, int64_t window, int64_t padding,
                                        bool with_partials) {
  return depthmetric::ssim::forward_cuda(x, y, window, padding, with_partials);
}

std::tuple<at::Tensor, at::Tensor> ssim_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& y,
                                                 const at::Tensor& partials, int64_t window, int64_t padding) {
  return depthmetric::ssim::backward_cuda(grad, x, y, partials, window, padding);
}

at::Tensor depth_metric_sums(const at::Tensor& pred, const at::Tensor& gt, const c10::optional<at::Tensor>& mask,
                             const c10::optional<at::Tensor>& scale, double min_depth, double max_depth,
                             std::vector<int64_t> window) {
  return depthmetric::dms::sums_cuda(pred, gt, mask, scale, min_depth, max_depth, window);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("depth_metric_sums", &depth_metric_sums);
  m.def("ssim", &ssim);
  m.def("ssim_backward", &ssim_backward);
  m.def("min_reprojection", &min_reprojection);
  m.def("min_reprojection_backward", &min_reprojection_backward);
  m.def("multi_range_contrastive", &multi_range_contrastive);
  m.def("multi_range_contrastive_backward", &multi_range_contrastive_backward);
}
