// The CPU kernels of the bin heads (bin_expectation, log_binomial_expectation), written once over a logit
// Source (common/bin_softmax.h). Work is split over image rows (the forward) and over blocks of the
// centres' source rows or image rows (the backward, see backward_rows), and every output element is written
// by one task in a fixed order, so the results do not depend on the number of threads. The loops over a row's pixels run on
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

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

namespace depthmetric {
namespace bin_softmax {

// Flush-to-zero and denormals-are-zero for the scope (one task of a parallel_for), restored after: the
// backward's g prob_k (c_k - depth) is subnormal for the many bins of a peaked softmax (the gradient of a
// mean is ~1e-6 a pixel, times a probability of 1e-33), and x86 computes on subnormals ~100x slower (the
// log-binomial backward ran 5x slower than its plain-PyTorch twin). Values below 1.2e-38 become 0.
class FlushDenormals {
 public:
#if defined(__SSE__)
  FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040u); }  // FTZ (bit 15) | DAZ (bit 6)
  ~FlushDenormals() { _mm_setcsr(saved_); }

 private:
  unsigned saved_;
#endif
};

// The column taps of the output row, as arrays (source columns j0, j1 times the stride, weight lambda), so
// that a row of centres is four indexed loads and two lerps per pixel.
template <typename acc_t>
struct ColumnTaps {
  std::vector<int64_t> j0, j1;
  std::vector<acc_t> lambda;
  ColumnTaps(const std::vector<Tap<acc_t>>& tx, int64_t stride) : j0(tx.size()), j1(tx.size()), lambda(tx.size()) {
    for (size_t x = 0; x < tx.size(); ++x) {
      j0[x] = tx[x].i0 * stride;
      j1[x] = tx[x].i1 * stride;
      lambda[x] = tx[x].lambda;
    }
  }
};

// Row k of the centres resampled to the output row with tap ty: out[x] for every output column (bilinear()
// of common/bin_softmax.h, the samples read through the precomputed column offsets).
template <typename scalar_t, typename acc_t>
void centre_row(const StridedView4<const scalar_t>& c, int64_t b, int64_t k, const Tap<acc_t>& ty,
                const ColumnTaps<acc_t>& tx, acc_t* __restrict__ out) {
  const scalar_t *__restrict__ r0 = &c(b, k, ty.i0, 0), *__restrict__ r1 = &c(b, k, ty.i1, 0);
  const int64_t *__restrict__ j0 = tx.j0.data(), *__restrict__ j1 = tx.j1.data();
  const acc_t* __restrict__ lx = tx.lambda.data();
  const int64_t W = static_cast<int64_t>(tx.j0.size());
  for (int64_t x = 0; x < W; ++x) {
    out[x] = bilinear(static_cast<acc_t>(r0[j0[x]]), static_cast<acc_t>(r0[j1[x]]), static_cast<acc_t>(r1[j0[x]]),
                      static_cast<acc_t>(r1[j1[x]]), ty.lambda, lx[x]);
  }
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
  const ColumnTaps<acc_t> tx(taps(make_axis<acc_t>(w, W)), c.s3);
  torch::stable::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    const FlushDenormals ftz;
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

// The output columns that read source column j with a nonzero weight, and those weights (x ascending):
// x[start[j] .. start[j+1]), from the candidates of reading_range and the forward's taps.
template <typename acc_t>
struct ColumnReads {
  std::vector<int64_t> start, x;
  std::vector<acc_t> weight;
  ColumnReads(const Axis<acc_t>& ax, const std::vector<Tap<acc_t>>& tx) : start(ax.in + 1, 0) {
    for (int64_t j = 0; j < ax.in; ++j) {
      int64_t lo = 0, hi = -1;
      reading_range(ax, j, lo, hi);
      for (int64_t d = lo; d <= hi; ++d) {
        const acc_t wj = tap_weight(tx[d], j);
        if (wj == acc_t(0)) continue;
        x.push_back(d);
        weight.push_back(wj);
      }
      start[j + 1] = static_cast<int64_t>(x.size());
    }
  }
};

// One output row (b, y) of the backward, each bin's probabilities computed once for both of its parts:
// with `pixel`, d_k = g prob_k (c_k - depth) handed to the source's row gradients (the logits', p's, t's);
// with `gather`, g prob_k summed over the columns that read each source column j (ColumnReads), times the
// row's weight on source row i, added into acc[(i - i_a) * K * w + k * w + j] for the source rows i in
// [i_a, i_b] that the row reads.
template <typename scalar_t, typename Source>
struct BackwardRow {
  using acc_t = acc_type<scalar_t>;
  int64_t K, W;
  std::vector<acc_t> buffer;
  acc_t *terms, *l, *cr, *g, *lse, *depth, *d, *d0, *d1, *dy, *q;
  BackwardRow(int64_t K_, int64_t W_) : K(K_), W(W_), buffer((Source::kTerms + 10) * W_) {
    terms = buffer.data();
    l = terms + Source::kTerms * W;
    cr = l + W, g = cr + W, lse = g + W, depth = lse + W, d = depth + W, d0 = d + W, d1 = d0 + W, dy = d1 + W;
    q = dy + W;
  }

  void run(const Source& src, const StridedView4<const scalar_t>& c, const StridedView4<const scalar_t>& grad,
           const StridedView4<const acc_t>& stats, int64_t b, int64_t y, const Tap<acc_t>& ty,
           const ColumnTaps<acc_t>& tx, bool pixel, const ColumnReads<acc_t>* cols, int64_t i_a, int64_t i_b,
           acc_t* acc) {
    src.prepare_row(b, y, W, terms);
    for (int64_t x = 0; x < W; ++x) {
      g[x] = static_cast<acc_t>(grad(b, 0, y, x));
      lse[x] = stats(0, b, y, x);
      depth[x] = stats(1, b, y, x);
    }
    std::fill(d0, d0 + 3 * W, acc_t(0));
    const int64_t w = cols ? static_cast<int64_t>(cols->start.size()) - 1 : 0;
    // The source rows this row reads in [i_a, i_b], and with which weight (i0 == i1 for a single row).
    const bool read0 = cols && ty.i0 >= i_a && ty.i0 <= i_b;
    const bool read1 = cols && ty.i1 != ty.i0 && ty.i1 >= i_a && ty.i1 <= i_b;
    const acc_t wy0 = tap_weight(ty, ty.i0), wy1 = tap_weight(ty, ty.i1);
    for (int64_t k = 0; k < K; ++k) {
      src.logit_row(b, y, k, W, terms, l);
      for (int64_t x = 0; x < W; ++x) q[x] = g[x] * softmax_exp(l[x] - lse[x]);
      if (pixel) {
        centre_row(c, b, k, ty, tx, cr);
        const acc_t kf = static_cast<acc_t>(k);
        for (int64_t x = 0; x < W; ++x) {
          d[x] = q[x] * (cr[x] - depth[x]);
          d0[x] += d[x];
          d1[x] += kf * d[x];
          dy[x] += d[x] * (l[x] - lse[x]);  // sum_k d_k l_k, as pixel_backward sums it
        }
        src.grad_bin_row(b, y, k, W, terms, d);
      }
      if (!read0 && !read1) continue;
      for (int64_t j = 0; j < w; ++j) {
        acc_t sum = 0;
        for (int64_t e = cols->start[j]; e < cols->start[j + 1]; ++e) sum += cols->weight[e] * q[cols->x[e]];
        if (read0) acc[((ty.i0 - i_a) * K + k) * w + j] += wy0 * sum;
        if (read1) acc[((ty.i1 - i_a) * K + k) * w + j] += wy1 * sum;
      }
    }
    if (pixel) src.grad_pixel_row(b, y, K, W, terms, d0, d1, dy);
  }
};

// Backward: the source's per-pixel gradients (`pixel`: the logits', or p's and t's) and the centres'
// gradient (B,K,h,w; grad_centres.data null: not wanted), a gather. grad (B,1,H,W) is read through its
// strides (the gradient of a sum arrives expanded).
//
// Per-pixel centres of more than `row_block` rows: one task per block of `row_block` source rows of an
// image, which visits the output rows that read them (reading_range) in order, computes each one's
// probabilities once for both parts, writes the per-pixel gradients of the rows whose i0 lies in the block
// (each output row has one such block) and accumulates the block's cells; only the rows at a block's
// border are computed twice. Otherwise (per-image centres: every pixel reads the one cell) the per-pixel
// part runs over the output rows and the gather over the images. Either way each cell sums its terms in a
// fixed order (output rows, then columns, ascending), which the sizes alone decide.
template <typename scalar_t, typename Source>
void backward_rows(const Source& src, const StridedView4<const scalar_t>& c, const StridedView4<const scalar_t>& grad,
                   const StridedView4<const acc_type<scalar_t>>& stats, int64_t B, int64_t K, int64_t H, int64_t W,
                   int64_t h, int64_t w, bool pixel, const StridedView4<scalar_t>& grad_centres, int64_t row_block) {
  using acc_t = acc_type<scalar_t>;
  const Axis<acc_t> ay = make_axis<acc_t>(h, H), ax = make_axis<acc_t>(w, W);
  const std::vector<Tap<acc_t>> col_taps = taps(ax);
  const ColumnTaps<acc_t> tx(col_taps, c.s3);
  const bool gather = grad_centres.data != nullptr;
  const ColumnReads<acc_t> cols(gather ? ax : make_axis<acc_t>(0, 0), col_taps);
  auto write_cells = [&](int64_t b, int64_t i_a, int64_t i_b, const std::vector<acc_t>& acc) {
    for (int64_t i = i_a; i <= i_b; ++i) {
      for (int64_t k = 0; k < K; ++k) {
        for (int64_t j = 0; j < w; ++j) grad_centres(b, k, i, j) = static_cast<scalar_t>(acc[((i - i_a) * K + k) * w + j]);
      }
    }
  };
  const int64_t n_blocks = (h + row_block - 1) / row_block;
  if (gather && n_blocks >= 2) {
    torch::stable::parallel_for(0, B * n_blocks, 1, [&](int64_t begin, int64_t end) {
      const FlushDenormals ftz;
      BackwardRow<scalar_t, Source> row(K, W);
      std::vector<acc_t> acc;
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / n_blocks, i_a = (task % n_blocks) * row_block;
        const int64_t i_b = std::min(h, i_a + row_block) - 1;
        int64_t y_lo = 0, y_hi = -1, unused = 0;
        reading_range(ay, i_a, y_lo, unused);
        reading_range(ay, i_b, unused, y_hi);
        acc.assign((i_b - i_a + 1) * K * w, acc_t(0));
        for (int64_t y = y_lo; y <= y_hi; ++y) {
          const Tap<acc_t> ty = tap(ay, y);
          const bool owner = pixel && ty.i0 >= i_a && ty.i0 <= i_b;
          const bool reads = (ty.i0 >= i_a && ty.i0 <= i_b) || (ty.i1 >= i_a && ty.i1 <= i_b);
          if (owner || reads) row.run(src, c, grad, stats, b, y, ty, tx, owner, &cols, i_a, i_b, acc.data());
        }
        write_cells(b, i_a, i_b, acc);
      }
    });
    return;
  }
  if (pixel) {
    torch::stable::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
      const FlushDenormals ftz;
      BackwardRow<scalar_t, Source> row(K, W);
      for (int64_t r = begin; r < end; ++r) {
        const int64_t b = r / H, y = r % H;
        row.run(src, c, grad, stats, b, y, tap(ay, y), tx, true, nullptr, 0, -1, nullptr);
      }
    });
  }
  if (!gather) return;
  torch::stable::parallel_for(0, B * n_blocks, 1, [&](int64_t begin, int64_t end) {
    const FlushDenormals ftz;
    BackwardRow<scalar_t, Source> row(K, W);
    std::vector<acc_t> acc;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / n_blocks, i_a = (task % n_blocks) * row_block;
      const int64_t i_b = std::min(h, i_a + row_block) - 1;
      acc.assign((i_b - i_a + 1) * K * w, acc_t(0));
      for (int64_t y = 0; y < H; ++y) {
        const Tap<acc_t> ty = tap(ay, y);
        if ((ty.i0 >= i_a && ty.i0 <= i_b) || (ty.i1 >= i_a && ty.i1 <= i_b)) {
          row.run(src, c, grad, stats, b, y, ty, tx, false, &cols, i_a, i_b, acc.data());
        }
      }
      write_cells(b, i_a, i_b, acc);
    }
  });
}

}  // namespace bin_softmax
}  // namespace depthmetric
