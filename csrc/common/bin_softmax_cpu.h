// The CPU kernels of the bin heads (bin_expectation, log_binomial_expectation), written once over a logit
// Source (common/bin_softmax.h). Work is split over image rows (forward, the backward's per-pixel pass) and
// over the centres' source rows (the gather), and every output element is written by one task in a fixed
// order, so the results do not depend on the number of threads. The loops over a row's pixels run on
// contiguous buffers (the source's row terms, the logits of one bin, the resampled centres of one bin), so
// that the exps and the arithmetic vectorise. Besides the per-pixel interface, a Source provides rows:
//   prepare_row(b, y, W, terms)          per-pixel terms of row y into terms[0..kTerms*W)
//   logit_row(b, y, k, W, terms, l)      l_k of the row's pixels
//   grad_bin_row(b, y, k, W, terms, d)   grad_bin over the row
//   grad_pixel_row(b, y, K, W, terms, d0, d1, dy)
#pragma once

#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "common/bin_softmax.h"
#include "common/tensor_views.h"

namespace depthmetric {
namespace bin_softmax {

// Row k of the centres resampled to the output row with tap ty: out[x] for every output column.
template <typename scalar_t, typename acc_t>
void centre_row(const StridedView4<const scalar_t>& c, int64_t b, int64_t k, const Tap<acc_t>& ty,
                const std::vector<Tap<acc_t>>& tx, acc_t* __restrict__ out) {
  const int64_t W = static_cast<int64_t>(tx.size());
  for (int64_t x = 0; x < W; ++x) out[x] = centre(c, b, k, ty, tx[x]);
}

template <typename acc_t>
std::vector<Tap<acc_t>> taps(const Axis<acc_t>& a) {
  std::vector<Tap<acc_t>> out(a.out);
  for (int64_t d = 0; d < a.out; ++d) out[d] = tap(a, d);
  return out;
}

// Forward: per pixel lse and depth into stats (2,B,H,W, acc_t), depth into out (B,1,H,W), and with probs
// (data non-null) prob_k = exp(l_k - lse) into probs (B,K,H,W). Two passes over the bins: the maximum, then
// the sums (each a vectorised loop over the row).
template <typename scalar_t, typename Source>
void forward_rows(const Source& src, const StridedView4<const scalar_t>& c, int64_t B, int64_t K, int64_t H,
                  int64_t W, int64_t h, int64_t w, const StridedView4<scalar_t>& out,
                  const StridedView4<acc_type<scalar_t>>& stats, const StridedView4<scalar_t>& probs) {
  using acc_t = acc_type<scalar_t>;
  const Axis<acc_t> ay = make_axis<acc_t>(h, H);
  const std::vector<Tap<acc_t>> tx = taps(make_axis<acc_t>(w, W));
  torch::stable::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buffer((Source::kTerms + 5) * W);
    acc_t* terms = buffer.data();
    acc_t *__restrict__ l = terms + Source::kTerms * W, *__restrict__ cr = l + W, *__restrict__ m = cr + W;
    acc_t *__restrict__ s = m + W, *__restrict__ e = s + W;
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / H, y = row % H;
      const Tap<acc_t> ty = tap(ay, y);
      src.prepare_row(b, y, W, terms);
      std::fill(m, m + W, -std::numeric_limits<acc_t>::infinity());
      std::fill(s, s + W, acc_t(0));
      std::fill(e, e + W, acc_t(0));
      for (int64_t k = 0; k < K; ++k) {
        src.logit_row(b, y, k, W, terms, l);
        for (int64_t x = 0; x < W; ++x) m[x] = l[x] > m[x] ? l[x] : m[x];
      }
      for (int64_t k = 0; k < K; ++k) {
        src.logit_row(b, y, k, W, terms, l);
        centre_row(c, b, k, ty, tx, cr);
        for (int64_t x = 0; x < W; ++x) {
          const acc_t z = softmax_exp(l[x] - m[x]);
          s[x] += z;
          e[x] += z * cr[x];
        }
      }
      for (int64_t x = 0; x < W; ++x) {
        const acc_t lse = m[x] + bin_log(s[x]), depth = e[x] / s[x];
        stats(0, b, y, x) = lse;
        stats(1, b, y, x) = depth;
        out(b, 0, y, x) = static_cast<scalar_t>(depth);
        m[x] = lse;
      }
      if (probs.data == nullptr) continue;
      for (int64_t k = 0; k < K; ++k) {
        src.logit_row(b, y, k, W, terms, l);
        for (int64_t x = 0; x < W; ++x) probs(b, k, y, x) = static_cast<scalar_t>(softmax_exp(l[x] - m[x]));
      }
    }
  });
}

// Backward, per pixel: d_k = g prob_k (c_k - depth) handed to the source's row gradients (the logits' or
// p's and t's). grad (B,1,H,W) is read through its strides (the gradient of a sum arrives expanded).
template <typename scalar_t, typename Source>
void backward_rows(const Source& src, const StridedView4<const scalar_t>& c, const StridedView4<const scalar_t>& grad,
                   const StridedView4<const acc_type<scalar_t>>& stats, int64_t B, int64_t K, int64_t H, int64_t W,
                   int64_t h, int64_t w) {
  using acc_t = acc_type<scalar_t>;
  const Axis<acc_t> ay = make_axis<acc_t>(h, H);
  const std::vector<Tap<acc_t>> tx = taps(make_axis<acc_t>(w, W));
  torch::stable::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buffer((Source::kTerms + 9) * W);
    acc_t* terms = buffer.data();
    acc_t *__restrict__ l = terms + Source::kTerms * W, *__restrict__ cr = l + W, *__restrict__ g = cr + W;
    acc_t *__restrict__ lse = g + W, *__restrict__ depth = lse + W, *__restrict__ d = depth + W;
    acc_t *__restrict__ d0 = d + W, *__restrict__ d1 = d0 + W, *__restrict__ dy = d1 + W;
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / H, y = row % H;
      const Tap<acc_t> ty = tap(ay, y);
      src.prepare_row(b, y, W, terms);
      for (int64_t x = 0; x < W; ++x) {
        g[x] = static_cast<acc_t>(grad(b, 0, y, x));
        lse[x] = stats(0, b, y, x);
        depth[x] = stats(1, b, y, x);
      }
      std::fill(d0, d0 + 3 * W, acc_t(0));
      for (int64_t k = 0; k < K; ++k) {
        src.logit_row(b, y, k, W, terms, l);
        centre_row(c, b, k, ty, tx, cr);
        const acc_t kf = static_cast<acc_t>(k);
        for (int64_t x = 0; x < W; ++x) {
          const acc_t log_prob = l[x] - lse[x];
          d[x] = g[x] * softmax_exp(log_prob) * (cr[x] - depth[x]);
          d0[x] += d[x];
          d1[x] += kf * d[x];
          dy[x] += d[x] * log_prob;  // sum_k d_k l_k, as pixel_backward sums it
        }
        src.grad_bin_row(b, y, k, W, terms, d);
      }
      src.grad_pixel_row(b, y, K, W, terms, d0, d1, dy);
    }
  });
}

// The centres' gradient (B,K,h,w), gathered: one task per source row (b, i) of the centres, which visits the
// output rows that read it (reading_range, each kept if its tap reads row i) and, in each, sums
// g prob_k times the column weight over the output columns that read source column j, for every k and j.
// Each cell is written once, its terms added in a fixed order (output rows, then columns, ascending).
template <typename scalar_t, typename Source>
void centre_gradient_rows(const Source& src, const StridedView4<const scalar_t>& grad,
                          const StridedView4<const acc_type<scalar_t>>& stats, int64_t B, int64_t K, int64_t H,
                          int64_t W, int64_t h, int64_t w, const StridedView4<scalar_t>& grad_centres) {
  using acc_t = acc_type<scalar_t>;
  const Axis<acc_t> ay = make_axis<acc_t>(h, H), ax = make_axis<acc_t>(w, W);
  const std::vector<Tap<acc_t>> tx = taps(ax);
  std::vector<int64_t> x_lo(w), x_hi(w);
  for (int64_t j = 0; j < w; ++j) reading_range(ax, j, x_lo[j], x_hi[j]);
  torch::stable::parallel_for(0, B * h, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buffer((Source::kTerms + 3) * W + K * w);
    acc_t* terms = buffer.data();
    acc_t *__restrict__ l = terms + Source::kTerms * W, *__restrict__ gw = l + W, *__restrict__ lse = gw + W;
    acc_t* acc = lse + W;
    for (int64_t cell_row = begin; cell_row < end; ++cell_row) {
      const int64_t b = cell_row / h, i = cell_row % h;
      int64_t y_lo = 0, y_hi = -1;
      reading_range(ay, i, y_lo, y_hi);
      std::fill(acc, acc + K * w, acc_t(0));
      for (int64_t y = y_lo; y <= y_hi; ++y) {
        const acc_t wy = tap_weight(tap(ay, y), i);
        if (wy == acc_t(0)) continue;
        src.prepare_row(b, y, W, terms);
        for (int64_t x = 0; x < W; ++x) {
          gw[x] = wy * static_cast<acc_t>(grad(b, 0, y, x));
          lse[x] = stats(0, b, y, x);
        }
        for (int64_t k = 0; k < K; ++k) {
          src.logit_row(b, y, k, W, terms, l);
          for (int64_t x = 0; x < W; ++x) l[x] = gw[x] * softmax_exp(l[x] - lse[x]);
          for (int64_t j = 0; j < w; ++j) {
            acc_t sum = 0;
            for (int64_t x = x_lo[j]; x <= x_hi[j]; ++x) sum += tap_weight(tx[x], j) * l[x];
            acc[k * w + j] += sum;
          }
        }
      }
      for (int64_t k = 0; k < K; ++k) {
        for (int64_t j = 0; j < w; ++j) grad_centres(b, k, i, j) = static_cast<scalar_t>(acc[k * w + j]);
      }
    }
  });
}

}  // namespace bin_softmax
}  // namespace depthmetric
