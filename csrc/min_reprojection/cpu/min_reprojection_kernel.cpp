// CPU kernels of depthmetric::min_reprojection. Forward: one image row per step, every candidate's
// photometric error accumulated over channels in row buffers, then the minimum. Backward: over blocks of
// rows, channel by channel, the warped images together row by row, recomputing the window statistics of
// each output row once (a ring of rows per warped image) and gathering the transposed 3x3 window.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <tuple>
#include <type_traits>
#include <vector>

#include "common/tensor_views.h"
#include "common/window_rows.h"
#include "min_reprojection/cpu/min_reprojection_blocks.h"
#include "min_reprojection/min_reprojection.h"
#include "min_reprojection/reprojection_math.h"

namespace depthmetric {
namespace min_reprojection {
namespace {

using ssim::Axis;

template <typename scalar_t>
std::vector<StridedView4<const scalar_t>> views(const TensorList& images) {
  std::vector<StridedView4<const scalar_t>> out;
  for (const auto& t : images) out.push_back(strided_view4<const scalar_t>(t));
  return out;
}

// Backward coefficients of one output row: weight * alpha/C * dclamp/dSSIM times SSIM's partials in mu_x,
// E[x^2] and E[xy]. Out of line with restrict pointer parameters, which GCC vectorises; inlined into the
// transposed gather, or with the pointers read from MomentRow, it does not.
template <typename acc_t>
__attribute__((noinline)) void coefficient_row(int64_t n, const acc_t* __restrict__ mx, const acc_t* __restrict__ my,
                                               const acc_t* __restrict__ xx, const acc_t* __restrict__ yy,
                                               const acc_t* __restrict__ xy, const acc_t* __restrict__ weight,
                                               acc_t w_ssim, acc_t* __restrict__ d_mx, acc_t* __restrict__ d_sq,
                                               acc_t* __restrict__ d_xy) {
  for (int64_t p = 0; p < n; ++p) {
    const auto t = ssim::ssim_terms(ssim::Moments<acc_t>{mx[p], my[p], xx[p], yy[p], xy[p]});
    const acc_t k = weight[p] * w_ssim * ssim::dssim(t.ssim).slope;
    d_mx[p] = k * t.d_mx;
    d_sq[p] = k * t.d_sq;
    d_xy[p] = k * t.d_xy;
  }
}

// One candidate's photometric error of one row (channel_error at the window centres), added to its channel
// sum e. Out of line with restrict pointers so that it vectorises.
template <typename acc_t>
__attribute__((noinline)) void error_row(int64_t n, const acc_t* __restrict__ mx, const acc_t* __restrict__ my,
                                         const acc_t* __restrict__ xx, const acc_t* __restrict__ yy,
                                         const acc_t* __restrict__ xy, const acc_t* __restrict__ x,
                                         const acc_t* __restrict__ y, TermWeights<acc_t> w,
                                         acc_t* __restrict__ e) {
  for (int64_t p = 0; p < n; ++p) {
    const acc_t d = ssim::dssim(ssim::ssim_terms(ssim::Moments<acc_t>{mx[p], my[p], xx[p], yy[p], xy[p]}).ssim).value;
    e[p] += channel_error(w, d, x[p], y[p]);
  }
}

// The gradient of one warped row from the transposed window sums of the coefficient fields (mu_x, E[x^2],
// E[xy]) and the L1 term's weight coef * (1 - alpha)/C. Unit stride at compile time when the rows are
// contiguous, so the loop vectorises.
template <typename scalar_t, typename acc_t, typename Stride>
void gradient_row(int64_t n, const acc_t* const* f, const acc_t* __restrict__ coef, acc_t w_l1,
                  const scalar_t* __restrict__ x, const scalar_t* __restrict__ y, scalar_t* __restrict__ gx,
                  Stride sx, Stride sy, Stride sg) {
  const acc_t *__restrict__ f0 = f[0], *__restrict__ f1 = f[1], *__restrict__ f2 = f[2];
  for (int64_t q = 0; q < n; ++q) {
    const acc_t xq = static_cast<acc_t>(x[q * sx]), yq = static_cast<acc_t>(y[q * sy]);
    gx[q * sg] = static_cast<scalar_t>(input_gradient(f0[q], f1[q], f2[q], xq, yq, coef[q] * w_l1));
  }
}

// g(p) * selection(p) over one row: the weight of output p in the gradient of warped image s; returns
// whether any is nonzero. Out of line with restrict pointers, and the test in a loop of its own, so that
// both loops vectorise.
template <typename acc_t>
__attribute__((noinline)) bool selection_row(int64_t n, const acc_t* __restrict__ g, const int64_t* __restrict__ winner,
                                             int64_t s, int64_t n_sources, bool mean_sources, acc_t* __restrict__ out) {
  // selected() of a winning pixel, the winners compared as int32 (candidate indices, < 2^31): SSE2 can
  // vectorise that, an int64 comparison it cannot.
  const int32_t key = static_cast<int32_t>(mean_sources ? 0 : s);
  const acc_t share = selected<acc_t>(key, s, n_sources, mean_sources);
  for (int64_t p = 0; p < n; ++p) {
    const acc_t w = g[p] * share;
    out[p] = static_cast<int32_t>(winner[p]) == key ? w : acc_t(0);
  }
  int32_t any = 0;
  for (int64_t p = 0; p < n; ++p) any |= out[p] != acc_t(0);
  return any != 0;
}

// The first minimum over the K candidates' errors of one row (pe: K rows of n), as torch.argmin picks it.
// Candidate-major with restrict pointers, an int32 index (SSE2 has no 64-bit compare or select) and the
// index select as mask arithmetic, so the loops vectorise; the per-pixel loop over candidates with an int64
// index did not, nor did this one with ?: selects ("control flow in loop"), which mispredicted on each pixel.
template <typename acc_t>
__attribute__((noinline)) void argmin_row(int64_t n, int64_t K, const acc_t* __restrict__ pe, acc_t* __restrict__ best,
                                          int32_t* __restrict__ arg) {
  for (int64_t p = 0; p < n; ++p) {
    best[p] = pe[p];
    arg[p] = 0;
  }
  for (int64_t k = 1; k < K; ++k) {
    const acc_t* __restrict__ e = pe + k * n;
    const int32_t kk = static_cast<int32_t>(k);
    for (int64_t p = 0; p < n; ++p) {
      const acc_t v = e[p], b = best[p];
      const int32_t less = -static_cast<int32_t>(v < b);  // all ones where v wins; a ?: select is branchy
      best[p] = std::min(b, v);                            // (v < b) ? v : b
      arg[p] = (kk & less) | (arg[p] & ~less);
    }
  }
}

template <typename scalar_t>
void forward_rows(const Tensor& target, const TensorList& warped, const TensorList& sources, const Tensor& noise,
                  double alpha_d, bool mean_sources, Tensor& loss, Tensor& winner) {
  using acc_t = acc_type<scalar_t>;
  const auto win = ssim::make_window<acc_t>(ssim::kBox3);
  const int64_t B = target.size(0), C = target.size(1), H = target.size(2), W = target.size(3);
  const Axis ah = ssim::make_axis(H, ssim::kReflect, 1), aw = ssim::make_axis(W, ssim::kReflect, 1);
  const int64_t S = static_cast<int64_t>(warped.size()), K = S + static_cast<int64_t>(sources.size());
  const auto tv = strided_view4<const scalar_t>(target);
  auto cands = views<scalar_t>(warped);
  for (const auto& v : views<scalar_t>(sources)) cands.push_back(v);
  const auto terms = term_weights<acc_t>(alpha_d, C);
  const acc_t* eps = K > S ? data_of<const acc_t>(noise) : nullptr;
  acc_t* out = data_of<acc_t>(loss);
  int64_t* idx = data_of<int64_t>(winner);

  torch::stable::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    // One ring of converted rows per image and channel, so each input row is converted once per task.
    std::vector<RowTaps<acc_t>> taps((K + 1) * C, RowTaps<acc_t>(win, ah, aw));
    MomentRow<acc_t> m(W, taps[0].len());
    std::vector<acc_t> pe(K * W);
    std::vector<int32_t> arg_row(W);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / H, h = row % H;
      std::fill(pe.begin(), pe.end(), acc_t(0));
      for (int64_t c = 0; c < C; ++c) {
        RowTaps<acc_t>& ty = taps[K * C + c];
        ty.load(tv, b, c, h);
        m.compute_y(win, ty);
        for (int64_t k = 0; k < K; ++k) {
          RowTaps<acc_t>& tx = taps[k * C + c];
          tx.load(cands[k], b, c, h);
          m.compute_x(win, tx, ty);
          error_row(W, m.mx.data(), m.my.data(), m.xx.data(), m.yy.data(), m.xy.data(), tx.centre(), ty.centre(),
                    terms, &pe[k * W]);
        }
      }
      for (int64_t s = S; s < K; ++s) {  // identity errors get the tie-breaking noise
        const acc_t* n = eps + ((s - S) * B * H + row) * W;
        for (int64_t p = 0; p < W; ++p) pe[s * W + p] += n[p];
      }
      acc_t* best = out + row * W;
      int64_t* arg = idx + row * W;
      if (mean_sources) {  // Monodepth2's avg_reprojection: warped average vs identity average
        for (int64_t p = 0; p < W; ++p) {
          acc_t wsum = 0, isum = 0;
          for (int64_t s = 0; s < S; ++s) wsum += pe[s * W + p];
          for (int64_t s = S; s < K; ++s) isum += pe[s * W + p];
          const auto choice = mean_choice(wsum, isum, S, K > S);
          best[p] = choice.loss;
          arg[p] = choice.winner;
        }
      } else {
        argmin_row(W, K, pe.data(), best, arg_row.data());
        for (int64_t p = 0; p < W; ++p) arg[p] = arg_row[p];
      }
    }
  });
}

template <typename scalar_t>
void backward_rows(const Tensor& grad_loss, const Tensor& target, const TensorList& warped, const Tensor& winner,
                   double alpha_d, bool mean_sources, TensorList& grads) {
  using acc_t = acc_type<scalar_t>;
  const auto win = ssim::make_window<acc_t>(ssim::kBox3);
  const int64_t B = target.size(0), C = target.size(1), H = target.size(2), W = target.size(3);
  const Axis ah = ssim::make_axis(H, ssim::kReflect, 1), aw = ssim::make_axis(W, ssim::kReflect, 1);
  const int64_t S = static_cast<int64_t>(warped.size()), blocks = (H + kBackwardRowBlock - 1) / kBackwardRowBlock;
  const auto tv = strided_view4<const scalar_t>(target);
  const auto wv = views<scalar_t>(warped);
  std::vector<StridedView4<scalar_t>> gv;
  for (auto& g : grads) gv.push_back(strided_view4<scalar_t>(g));
  const auto terms = term_weights<acc_t>(alpha_d, C);
  // The incoming gradient is read through its strides: the mean's is an expanded scalar, and contiguous()
  // would write (and page-fault in) a fresh B,H,W map.
  const acc_t* g = data_of<const acc_t>(grad_loss);
  const int64_t gs0 = grad_loss.stride(0), gs1 = grad_loss.stride(1), gs2 = grad_loss.stride(2);
  const int64_t* idx = data_of<const int64_t>(winner);

  // A task is one batch item and block of rows, all channels and warped images: the selection weights do
  // not depend on the channel, so they are computed once per task for the output rows its gather reads
  // (q0 - offset - r .. q1 - 1 - offset + r), not once per channel and twice per row (fill and L1 term),
  // which read g and the int64 winners 2C times; and the warped images advance row by row together, so
  // the target's moments of an output row are computed once for all of them.
  const int64_t r = win.radius, n_rows = kBackwardRowBlock + 2 * r;
  torch::stable::parallel_for(0, B * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<RowTaps<acc_t>> tx(S, RowTaps<acc_t>(win, ah, aw));
    RowTaps<acc_t> ty(win, ah, aw);
    MomentRow<acc_t> m(W, ty.len());
    std::vector<TransposedRows<acc_t>> tr(S, TransposedRows<acc_t>(win, ah, aw, 3));
    std::vector<acc_t> sums(3 * W), weights(S * n_rows * W), g_row(W);
    std::vector<char> any(S * n_rows);
    acc_t* fields[3] = {&sums[0], &sums[W], &sums[2 * W]};
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / blocks, q0 = (task % blocks) * kBackwardRowBlock,
                    q1 = std::min(H, q0 + kBackwardRowBlock);
      const int64_t first = q0 - ah.offset - r;
      const auto weight = [&](int64_t s, int64_t p_h) { return &weights[(s * n_rows + p_h - first) * W]; };
      for (int64_t h = std::max<int64_t>(0, first); h < std::min(H, q1 - ah.offset + r); ++h) {
        const acc_t* gr = contiguous_row(g + b * gs0 + h * gs1, gs2, W, g_row);
        for (int64_t s = 0; s < S; ++s) {
          any[s * n_rows + h - first] = selection_row(W, gr, idx + (b * H + h) * W, s, S, mean_sources, weight(s, h));
        }
      }
      for (int64_t c = 0; c < C; ++c) {
        int64_t s = 0, y_row = -1;  // y_row: the output row whose target moments m holds
        // Coefficient rows of warped image s: weight * alpha/C * dclamp/dSSIM times SSIM's partials in mu_x,
        // E[x^2], E[xy].
        const auto fill = [&](int64_t p_h, acc_t* const* rows) {
          if (!any[s * n_rows + p_h - first]) {
            for (int f = 0; f < 3; ++f) std::fill(rows[f], rows[f] + W, acc_t(0));
            return;
          }
          if (y_row != p_h) {
            ty.load(tv, b, c, p_h);
            m.compute_y(win, ty);
            y_row = p_h;
          }
          tx[s].load(wv[s], b, c, p_h);
          m.compute_x(win, tx[s], ty);
          coefficient_row(W, m.mx.data(), m.my.data(), m.xx.data(), m.yy.data(), m.xy.data(), weight(s, p_h),
                          terms.ssim, rows[0], rows[1], rows[2]);
        };
        for (auto& t : tr) t.reset();
        for (int64_t q_h = q0; q_h < q1; ++q_h) {
          for (s = 0; s < S; ++s) {
            tr[s].gather(q_h, fill, fields);
            const acc_t* coef = weight(s, q_h);  // the L1 term's weight, output q_h at centre q_h
            const scalar_t *xr = &wv[s](b, c, q_h, 0), *yr = &tv(b, c, q_h, 0);
            scalar_t* gr = &gv[s](b, c, q_h, 0);
            if (wv[s].s3 == 1 && tv.s3 == 1 && gv[s].s3 == 1) {
              const std::integral_constant<int64_t, 1> one;
              gradient_row(W, fields, coef, terms.l1, xr, yr, gr, one, one, one);
            } else {
              gradient_row(W, fields, coef, terms.l1, xr, yr, gr, wv[s].s3, tv.s3, gv[s].s3);
            }
          }
        }
      }
    }
  });
}

std::tuple<Tensor, Tensor> forward_cpu(const Tensor& target, const TensorList& warped, const TensorList& sources,
                                       const Tensor& noise, double alpha, bool mean_sources) {
  check_forward(target, warped, sources, noise, alpha);
  auto [loss, winner] = allocate_forward(target);
  if (loss.numel() == 0) return {loss, winner};
  const auto eps = sources.empty() ? noise : torch::stable::contiguous(noise);
  DM_DISPATCH_FLOATING_TYPES(target.scalar_type(), "min_reprojection_cpu", [&] {
    forward_rows<scalar_t>(target, warped, sources, eps, alpha, mean_sources, loss, winner);
  });
  return {loss, winner};
}

TensorList backward_cpu(const Tensor& grad_loss, const Tensor& target, const TensorList& warped, const Tensor& winner,
                        double alpha, bool mean_sources) {
  check_backward(grad_loss, target, warped, winner, alpha);
  auto grads = allocate_gradients(warped);
  if (target.numel() == 0) return grads;
  DM_DISPATCH_FLOATING_TYPES(target.scalar_type(), "min_reprojection_backward_cpu", [&] {
    backward_rows<scalar_t>(grad_loss, target, warped, torch::stable::contiguous(winner),
                            alpha, mean_sources, grads);
  });
  return grads;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(depthmetric, CPU, m) {
  m.impl("min_reprojection", TORCH_BOX(&forward_cpu));
  m.impl("_min_reprojection_backward", TORCH_BOX(&backward_cpu));
}

}  // namespace min_reprojection
}  // namespace depthmetric
