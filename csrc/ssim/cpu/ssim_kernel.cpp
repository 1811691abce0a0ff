// CPU kernels of depthmetric::ssim: the forward works one output row at a time, the backward one input row
// at a time over blocks of rows (the transposed window gathers from a ring of coefficient rows).
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "common/tensor_views.h"
#include "ssim/cpu/window_rows.h"
#include "ssim/ssim.h"

namespace depthmetric {
namespace ssim {
namespace {

constexpr int64_t kRowBlock = 32;  // input rows per backward task; the ring refills 2r rows per block

template <typename scalar_t>
void forward_rows(const Tensor& x, const Tensor& y, const Geometry& geo, int64_t window, Tensor& out,
                  Tensor& partials) {
  using acc_t = acc_type<scalar_t>;
  const auto win = make_window<acc_t>(window);
  const auto xv = strided_view4<const scalar_t>(x), yv = strided_view4<const scalar_t>(y);
  const int64_t C = x.size(1), Ho = geo.h.n_out, Wo = geo.w.n_out, plane = out.numel();
  acc_t* s = data_of<acc_t>(out);
  acc_t* part = partials.numel() ? data_of<acc_t>(partials) : nullptr;  // none without a backward
  torch::stable::parallel_for(0, x.size(0) * C * Ho, 4, [&](int64_t begin, int64_t end) {
    RowTaps<acc_t> tx(win, geo.h, geo.w), ty(win, geo.h, geo.w);
    MomentRow<acc_t> m(Wo, tx.len());
    for (int64_t row = begin; row < end; ++row) {
      const int64_t p_h = row % Ho, c = (row / Ho) % C, b = row / (Ho * C);
      tx.load(xv, b, c, p_h);
      ty.load(yv, b, c, p_h);
      m.compute_y(win, ty);
      m.compute_x(win, tx, ty);
      acc_t* dst = s + row * Wo;
      if (part == nullptr) {
        for (int64_t p = 0; p < Wo; ++p) dst[p] = ssim_terms(m.at(p)).ssim;
        continue;
      }
      acc_t* d_mx = part + row * Wo;
      for (int64_t p = 0; p < Wo; ++p) {
        const auto t = ssim_terms(m.at(p));
        dst[p] = t.ssim;
        d_mx[p] = t.d_mx;
        d_mx[plane + p] = t.d_my;
        d_mx[2 * plane + p] = t.d_sq;
        d_mx[3 * plane + p] = t.d_xy;
      }
    }
  });
}

template <typename scalar_t>
void backward_rows(const Tensor& grad, const Tensor& x, const Tensor& y, const Tensor& partials, const Geometry& geo,
                   int64_t window, Tensor& grad_x, Tensor& grad_y) {
  using acc_t = acc_type<scalar_t>;
  const auto win = make_window<acc_t>(window);
  const auto xv = strided_view4<const scalar_t>(x), yv = strided_view4<const scalar_t>(y);
  const auto gx = strided_view4<scalar_t>(grad_x), gy = strided_view4<scalar_t>(grad_y);
  const int64_t C = x.size(1), H = x.size(2), W = x.size(3), Ho = geo.h.n_out, Wo = geo.w.n_out;
  const int64_t plane = grad.numel(), blocks = (H + kRowBlock - 1) / kRowBlock;
  const acc_t* g = data_of<const acc_t>(grad);
  const acc_t* part = data_of<const acc_t>(partials);
  torch::stable::parallel_for(0, x.size(0) * C * blocks, 1, [&](int64_t begin, int64_t end) {
    TransposedRows<acc_t> tr(win, geo.h, geo.w, kPartials);
    std::vector<acc_t> sums(kPartials * W);
    acc_t* fields[kPartials] = {&sums[0], &sums[W], &sums[2 * W], &sums[3 * W]};
    for (int64_t task = begin; task < end; ++task) {
      const int64_t bc = task / blocks, b = bc / C, c = bc % C;
      const int64_t q0 = (task % blocks) * kRowBlock, q1 = std::min(H, q0 + kRowBlock);
      tr.reset();
      // Coefficient rows: the incoming gradient times each saved partial derivative.
      const auto fill = [&](int64_t p_h, acc_t* const* rows) {
        const int64_t at = (bc * Ho + p_h) * Wo;
        for (int64_t f = 0; f < kPartials; ++f) {
          const acc_t* pf = part + f * plane + at;
          for (int64_t p = 0; p < Wo; ++p) rows[f][p] = g[at + p] * pf[p];
        }
      };
      for (int64_t q_h = q0; q_h < q1; ++q_h) {
        tr.gather(q_h, fill, fields);
        for (int64_t q = 0; q < W; ++q) {
          const acc_t xq = static_cast<acc_t>(xv(b, c, q_h, q)), yq = static_cast<acc_t>(yv(b, c, q_h, q));
          const acc_t sq2 = acc_t(2) * fields[2][q];
          gx(b, c, q_h, q) = static_cast<scalar_t>(fields[0][q] + sq2 * xq + fields[3][q] * yq);
          gy(b, c, q_h, q) = static_cast<scalar_t>(fields[1][q] + sq2 * yq + fields[3][q] * xq);
        }
      }
    }
  });
}

std::tuple<Tensor, Tensor> forward_cpu(const Tensor& x, const Tensor& y, int64_t window, int64_t padding,
                                       bool with_partials) {
  const auto geo = check_forward(x, y, window, padding);
  auto [out, partials] = allocate_forward(x, geo, with_partials);
  if (out.numel() == 0) return {out, partials};
  DM_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ssim_cpu", [&] {
    forward_rows<scalar_t>(x, y, geo, window, out, partials);
  });
  return {out, partials};
}

std::tuple<Tensor, Tensor> backward_cpu(const Tensor& grad, const Tensor& x, const Tensor& y, const Tensor& partials,
                                        int64_t window, int64_t padding) {
  const auto geo = check_forward(x, y, window, padding);
  check_backward(grad, x, y, partials, geo);
  auto grad_x = torch::stable::empty_like(x), grad_y = torch::stable::empty_like(y);
  if (x.numel() == 0) return {grad_x, grad_y};
  DM_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ssim_backward_cpu", [&] {
    backward_rows<scalar_t>(torch::stable::contiguous(grad), x, y, torch::stable::contiguous(partials), geo, window,
                            grad_x, grad_y);
  });
  return {grad_x, grad_y};
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(depthmetric, CPU, m) {
  m.impl("ssim", TORCH_BOX(&forward_cpu));
  m.impl("_ssim_backward", TORCH_BOX(&backward_cpu));
}

}  // namespace ssim
}  // namespace depthmetric
