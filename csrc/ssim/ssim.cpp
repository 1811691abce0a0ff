// Schema of depthmetric::ssim.
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY_FRAGMENT(depthmetric, m) {
  // window: 0 box3, 1 gauss11; padding: 0 reflect, 1 same (zeros), 2 valid. partials holds, per output pixel,
  // the four derivatives of SSIM with respect to the window moments that backward needs; without
  // with_partials it is empty and the forward writes the SSIM map alone: no gradient wanted, or, on CPU
  // only, a backward that recomputes the moments from x and y (given empty partials).
  m.def(
      "ssim(Tensor x, Tensor y, int window, int padding, bool with_partials=True) -> (Tensor ssim, Tensor partials)");
  // A gradient not asked for (need_x / need_y false) is neither computed nor allocated: it comes back empty.
  m.def(
      "_ssim_backward(Tensor grad, Tensor x, Tensor y, Tensor partials, int window, int padding, bool need_x=True, "
      "bool need_y=True) -> (Tensor grad_x, Tensor grad_y)");
}
