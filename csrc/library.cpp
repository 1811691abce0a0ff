// The depthmetric operator library. Each op adds its schema with STABLE_TORCH_LIBRARY_FRAGMENT in
// csrc/<op>/<op>.cpp and its kernels with STABLE_TORCH_LIBRARY_IMPL in csrc/<op>/{cpu,cuda}/.
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY(depthmetric, m) {}
