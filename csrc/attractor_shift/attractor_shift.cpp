// Schema of depthmetric::attractor_shift.
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY_FRAGMENT(depthmetric, m) {
  // ZoeDepth's attractor update out = c + reduce_a f(a - c): centers B,K,h,w, attractors B,A,h,w, out B,K,h,w
  // in the accumulation dtype. kind: 0 inv, 1 exp (attractor_shift_math.h); mean: average over the A
  // attractors (else their sum).
  m.def("attractor_shift(Tensor centers, Tensor attractors, float alpha, int gamma, int kind, bool mean) -> Tensor");
  // Recomputes f' from the inputs: grad_c = g (1 - s sum_a f'), grad_a = s sum_k g f' (s = 1/A or 1).
  m.def(
      "_attractor_shift_backward(Tensor grad, Tensor centers, Tensor attractors, float alpha, int gamma, int kind, "
      "bool mean) -> (Tensor grad_centers, Tensor grad_attractors)");
}
