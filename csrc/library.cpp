// The depthmetric operator library. Each op adds its schema with TORCH_LIBRARY_FRAGMENT in
// csrc/<op>/<op>.cpp and its kernels with TORCH_LIBRARY_IMPL in csrc/<op>/{cpu,cuda}/.
#include <torch/library.h>

TORCH_LIBRARY(depthmetric, m) {}
