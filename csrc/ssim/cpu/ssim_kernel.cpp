// CPU kernels of depthmetric::ssim: the forward works one output row at a time, the backward one input row
// at a time over blocks of rows (the transposed window gathers from a ring of coefficient rows). Given no
// partials (what the Python layer asks for on CPU), the backward recomputes each output row's moments once
// per block (the ring): that costs less than writing the four partial maps to fresh memory and reading them
// back (see benchmarks/results/NOTES_cpu.md).
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <tuple>
#include <type_traits>
#include <vector>

#include "common/tensor_views.h"
#include "common/window_rows.h"
#include "ssim/cpu/ssim_blocks.h"
#include "ssim/ssim.h"

namespace depthmetric {
namespace ssim {
namespace {

// SSIM and its four partials over one output row. Out of line with restrict pointers so that GCC
// vectorises it (inlined, the stores might alias MomentRow's vectors and the loop stays scalar).
template <typename acc_t>
__attribute__((noinline)) void ssim_row(int64_t n, const acc_t* __restrict__ mx, const acc_t* __restrict__ my,
                                        const acc_t* __restrict__ xx, const acc_t* __restrict__ yy,
                                        const acc_t* __restrict__ xy, acc_t* __restrict__ s,
                                        acc_t* __restrict__ d_mx, acc_t* __restrict__ d_my,
                                        acc_t* __restrict__ d_sq, acc_t* __restrict__ d_xy) {
  for (int64_t p = 0; p < n; ++p) {
    const auto t = ssim_terms(Moments<acc_t>{mx[p], my[p], xx[p], yy[p], xy[p]});
    s[p] = t.ssim;
    d_mx[p] = t.d_mx;
    d_my[p] = t.d_my;
    d_sq[p] = t.d_sq;
    d_xy[p] = t.d_xy;
  }
}

// The incoming gradient times SSIM's four partials over one output row (the backward's coefficient rows,
// from recomputed moments). Out of line with restrict pointers, like ssim_row.
template <typename acc_t>
__attribute__((noinline)) void coefficient_row(int64_t n, const acc_t* __restrict__ mx, const acc_t* __restrict__ my,
                                               const acc_t* __restrict__ xx, const acc_t* __restrict__ yy,
                                               const acc_t* __restrict__ xy, const acc_t* __restrict__ g,
                                               acc_t* __restrict__ c_mx, acc_t* __restrict__ c_my,
                                               acc_t* __restrict__ c_sq, acc_t* __restrict__ c_xy) {
  for (int64_t p = 0; p < n; ++p) {
    const auto t = ssim_terms(Moments<acc_t>{mx[p], my[p], xx[p], yy[p], xy[p]});
    c_mx[p] = g[p] * t.d_mx;
    c_my[p] = g[p] * t.d_my;
    c_sq[p] = g[p] * t.d_sq;
    c_xy[p] = g[p] * t.d_xy;
  }
}

// The input gradients of one row from the transposed window sums of the four coefficient fields (see
// SsimTerms): gx = f0 + 2 f2 x + f3 y, gy = f1 + 2 f2 y + f3 x. Unit stride at compile time when the rows
// are contiguous, so the loop vectorises.
template <typename scalar_t, typename acc_t, typename Stride>
void gradient_row(int64_t n, const acc_t* __restrict__ own, const acc_t* __restrict__ f2, const acc_t* __restrict__ f3,
                  const scalar_t* __restrict__ a, const scalar_t* __restrict__ b, scalar_t* __restrict__ g, Stride sa,
                  Stride sb, Stride sg) {
  // d SSIM / d a from the gathered coefficient rows, b the other image: own + 2 f2 a + f3 b (the same form
  // for x, own = f0, and for y, own = f1).
  for (int64_t q = 0; q < n; ++q) {
    const acc_t aq = static_cast<acc_t>(a[q * sa]), bq = static_cast<acc_t>(b[q * sb]);
    g[q * sg] = static_cast<scalar_t>(own[q] + acc_t(2) * f2[q] * aq + f3[q] * bq);
  }
}

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
      ssim_row(Wo, m.mx.data(), m.my.data(), m.xx.data(), m.yy.data(), m.xy.data(), dst, d_mx, d_mx + plane,
               d_mx + 2 * plane, d_mx + 3 * plane);
    }
  });
}

template <typename scalar_t>
void backward_rows(const Tensor& grad, const Tensor& x, const Tensor& y, const Tensor& partials, const Geometry& geo,
                   int64_t window, Tensor& grad_x, Tensor& grad_y) {
  using acc_t = acc_type<scalar_t>;
  const auto win = make_window<acc_t>(window);
  const auto xv = strided_view4<const scalar_t>(x), yv = strided_view4<const scalar_t>(y);
  const bool need_x = grad_x.numel() != 0, need_y = grad_y.numel() != 0;
  const auto gx = gradient_view<scalar_t>(grad_x), gy = gradient_view<scalar_t>(grad_y);
  const int64_t C = x.size(1), H = x.size(2), W = x.size(3), Ho = geo.h.n_out, Wo = geo.w.n_out;
  const int64_t plane = x.size(0) * C * Ho * Wo, blocks = (H + kBackwardRowBlock - 1) / kBackwardRowBlock;
  const bool unit = xv.s3 == 1 && yv.s3 == 1 && (!need_x || gx.s3 == 1) && (!need_y || gy.s3 == 1);
  // The incoming gradient is read through its strides: from a mean it is an expanded scalar (stride 0),
  // which a contiguous copy would turn into a full map written and read again.
  const auto gv = strided_view4<const acc_t>(grad);
  const acc_t* part = partials.numel() ? data_of<const acc_t>(partials) : nullptr;  // none: recompute
  torch::stable::parallel_for(0, x.size(0) * C * blocks, 1, [&](int64_t begin, int64_t end) {
    TransposedRows<acc_t> tr(win, geo.h, geo.w, kPartials);
    RowTaps<acc_t> tx(win, geo.h, geo.w), ty(win, geo.h, geo.w);
    MomentRow<acc_t> m(Wo, tx.len());
    std::vector<acc_t> sums(kPartials * W), g_row(Wo);
    // The own field of an image whose gradient is not wanted is neither read nor gathered.
    acc_t* fields[kPartials] = {need_x ? &sums[0] : nullptr, need_y ? &sums[W] : nullptr, &sums[2 * W], &sums[3 * W]};
    for (int64_t task = begin; task < end; ++task) {
      const int64_t bc = task / blocks, b = bc / C, c = bc % C;
      const int64_t q0 = (task % blocks) * kBackwardRowBlock, q1 = std::min(H, q0 + kBackwardRowBlock);
      tr.reset();
      // Coefficient rows: the incoming gradient times each saved partial derivative.
      const auto fill = [&](int64_t p_h, acc_t* const* rows) {
        const int64_t at = (bc * Ho + p_h) * Wo;
        const acc_t* g = contiguous_row(&gv(b, c, p_h, 0), gv.s3, Wo, g_row);
        if (part == nullptr) {
          tx.load(xv, b, c, p_h);
          ty.load(yv, b, c, p_h);
          m.compute_y(win, ty);
          m.compute_x(win, tx, ty);
          coefficient_row(Wo, m.mx.data(), m.my.data(), m.xx.data(), m.yy.data(), m.xy.data(), g, rows[0], rows[1],
                          rows[2], rows[3]);
          return;
        }
        for (int64_t f = 0; f < kPartials; ++f) {
          if (fields[f] == nullptr) continue;
          const acc_t* pf = part + f * plane + at;
          for (int64_t p = 0; p < Wo; ++p) rows[f][p] = g[p] * pf[p];
        }
      };
      for (int64_t q_h = q0; q_h < q1; ++q_h) {
        tr.gather(q_h, fill, fields);
        const scalar_t *xr = &xv(b, c, q_h, 0), *yr = &yv(b, c, q_h, 0);
        const auto emit = [&](const acc_t* own, const scalar_t* a, const scalar_t* o, scalar_t* g, int64_t sa,
                              int64_t so, int64_t sg) {
          if (unit) {
            const std::integral_constant<int64_t, 1> one;
            gradient_row(W, own, fields[2], fields[3], a, o, g, one, one, one);
          } else {
            gradient_row(W, own, fields[2], fields[3], a, o, g, sa, so, sg);
          }
        };
        if (need_x) emit(fields[0], xr, yr, &gx(b, c, q_h, 0), xv.s3, yv.s3, gx.s3);
        if (need_y) emit(fields[1], yr, xr, &gy(b, c, q_h, 0), yv.s3, xv.s3, gy.s3);
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
                                        int64_t window, int64_t padding, bool need_x, bool need_y) {
  const auto geo = check_forward(x, y, window, padding);
  check_backward(grad, x, y, partials, geo, /*can_recompute=*/true);
  auto grad_x = allocate_gradient(x, need_x), grad_y = allocate_gradient(y, need_y);
  if (x.numel() == 0 || !(need_x || need_y)) return {grad_x, grad_y};
  DM_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ssim_backward_cpu", [&] {
    const auto saved = partials.numel() ? torch::stable::contiguous(partials) : partials;
    backward_rows<scalar_t>(grad, x, y, saved, geo, window, grad_x, grad_y);
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
