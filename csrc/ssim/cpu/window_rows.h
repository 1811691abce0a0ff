// Row-at-a-time window statistics for the CPU kernels of depthmetric::ssim and depthmetric::min_reprojection.
// Everything runs on contiguous acc_t row buffers in simple loops over a row, so the compiler vectorises
// them; the separable window costs 2 (2r+1) multiply-adds per statistic and pixel.
#pragma once

#include <algorithm>
#include <vector>

#include "common/check.h"
#include "common/macros.h"
#include "ssim/ssim_math.h"

namespace depthmetric {
namespace ssim {

// A padded row of len entries, entry u at tap position u - r of the first output: entry u reads input
// column u + shift, and the entries [lo, hi) are the ones inside the image (no padding or reflection).
struct Interior {
  int64_t shift, lo, hi;
};

inline Interior interior(const Axis& a, int r, int64_t len) {
  const int64_t shift = a.offset - r;
  return {shift, std::max<int64_t>(0, -shift), std::min<int64_t>(len, a.n - shift)};
}

// The input rows one output row reads from one B,C plane, converted to acc_t and padded along the row:
// entry u of a row is tap position t = u + offset - r, so output p's window is entries p .. p + 2r.
template <typename acc_t>
class RowTaps {
 public:
  RowTaps(const Window<acc_t>& win, const Axis& ah, const Axis& aw)
      : win_(win), ah_(ah), aw_(aw), len_(aw.n_out + 2 * win.radius), data_((2 * win.radius + 1) * len_) {}

  template <typename scalar_t>
  void load(const StridedView4<const scalar_t>& v, int64_t b, int64_t c, int64_t p_h) {
    n_ = 0;
    for (int d = -win_.radius; d <= win_.radius; ++d) {
      const int64_t row = ah_.source(p_h + ah_.offset + d);
      if (row < 0) continue;  // a zero-padded row adds nothing
      acc_t* dst = &data_[n_ * len_];
      const scalar_t* src = &v(b, c, row, 0);
      // The interior is a plain (vectorisable) converting copy; only the few edge entries pad or reflect.
      const auto [shift, lo, hi] = interior(aw_, win_.radius, len_);
      const auto edge = [&](int64_t u) {
        const int64_t col = aw_.source(u + shift);
        dst[u] = col < 0 ? acc_t(0) : static_cast<acc_t>(src[col * v.s3]);
      };
      for (int64_t u = 0; u < lo; ++u) edge(u);
      for (int64_t u = hi; u < len_; ++u) edge(u);
      if (v.s3 == 1) {
        for (int64_t u = lo; u < hi; ++u) dst[u] = static_cast<acc_t>(src[u + shift]);
      } else {
        for (int64_t u = lo; u < hi; ++u) dst[u] = static_cast<acc_t>(src[(u + shift) * v.s3]);
      }
      if (d == 0) centre_ = n_;
      weight_[n_++] = win_.tap(d);
    }
  }

  int64_t len() const { return len_; }
  int n() const { return n_; }
  acc_t weight(int k) const { return weight_[k]; }
  const acc_t* row(int k) const { return &data_[k * len_]; }
  // The input value at the centre of output p's window (the centre row is never padding).
  acc_t centre(int64_t p) const { return data_[centre_ * len_ + p + win_.radius]; }

 private:
  Window<acc_t> win_;
  Axis ah_, aw_;
  int64_t len_;
  std::vector<acc_t> data_;
  acc_t weight_[2 * kMaxRadius + 1];
  int n_ = 0, centre_ = 0;
};

// Window mean of a (b == nullptr) or of a * b over the n_out outputs of one row: vertical taps into
// `vert` (length len), then the horizontal taps into `out`.
template <typename acc_t>
void window_mean(const Window<acc_t>& win, const RowTaps<acc_t>& a, const RowTaps<acc_t>* b, int64_t n_out,
                 acc_t* vert, acc_t* out) {
  const int64_t len = a.len();
  std::fill(vert, vert + len, acc_t(0));
  for (int k = 0; k < a.n(); ++k) {
    const acc_t w = a.weight(k);
    const acc_t* ra = a.row(k);
    if (b == nullptr) {
      for (int64_t u = 0; u < len; ++u) vert[u] += w * ra[u];
    } else {
      const acc_t* rb = b->row(k);
      for (int64_t u = 0; u < len; ++u) vert[u] += w * ra[u] * rb[u];
    }
  }
  std::fill(out, out + n_out, acc_t(0));
  for (int j = 0; j <= 2 * win.radius; ++j) {
    const acc_t w = win.w[j];
    for (int64_t p = 0; p < n_out; ++p) out[p] += w * vert[p + j];
  }
}

// The five window moments of one output row of (x, y); the y moments can be kept across several x.
template <typename acc_t>
struct MomentRow {
  explicit MomentRow(int64_t n_out, int64_t len)
      : n(n_out), mx(n_out), my(n_out), xx(n_out), yy(n_out), xy(n_out), vert(len) {}

  void compute_y(const Window<acc_t>& win, const RowTaps<acc_t>& y) {
    window_mean(win, y, static_cast<const RowTaps<acc_t>*>(nullptr), n, vert.data(), my.data());
    window_mean(win, y, &y, n, vert.data(), yy.data());
  }
  void compute_x(const Window<acc_t>& win, const RowTaps<acc_t>& x, const RowTaps<acc_t>& y) {
    window_mean(win, x, static_cast<const RowTaps<acc_t>*>(nullptr), n, vert.data(), mx.data());
    window_mean(win, x, &x, n, vert.data(), xx.data());
    window_mean(win, x, &y, n, vert.data(), xy.data());
  }
  Moments<acc_t> at(int64_t p) const { return {mx[p], my[p], xx[p], yy[p], xy[p]}; }

  int64_t n;
  std::vector<acc_t> mx, my, xx, yy, xy, vert;
};

// The transpose of the window for backward: given per-output coefficient rows G(p_h, .), accumulate for
// input row q_h the sums  sum_p W_h(p_h, q_h) W_w(p_w, q) G(p_h, p_w)  for every input column q.
// Coefficient rows come from a small ring of the last 2r+1 output rows, each filled once by `fill`.
template <typename acc_t>
class TransposedRows {
 public:
  TransposedRows(const Window<acc_t>& win, const Axis& ah, const Axis& aw, int n_fields)
      : win_(win), ah_(ah), aw_(aw), fields_(n_fields), slots_(2 * win.radius + 1),
        ring_(static_cast<size_t>(slots_) * n_fields * aw.n_out), tag_(slots_, -1), vert_(aw.n_out),
        pad_(aw.n_out + 2 * win.radius) {
    DM_CHECK(n_fields <= kMaxFields, "at most ", kMaxFields, " coefficient fields");
  }

  static constexpr int kMaxFields = 4;

  // Forget the cached rows (before moving to another plane).
  void reset() { std::fill(tag_.begin(), tag_.end(), int64_t(-1)); }

  // fill(p_h, field_rows) writes n_fields rows of aw.n_out coefficients for output row p_h;
  // out[f] receives aw.n input columns of field f.
  template <typename Fill>
  void gather(int64_t q_h, Fill&& fill, acc_t* const* out) {
    const int64_t n_out = aw_.n_out, r = win_.radius;
    const int64_t lo = ah_.first_output(q_h, win_.radius), hi = ah_.last_output(q_h, win_.radius);
    for (int f = 0; f < fields_; ++f) std::fill(out[f], out[f] + aw_.n, acc_t(0));
    if (lo > hi) return;
    for (int64_t p_h = lo; p_h <= hi; ++p_h) slot(p_h, fill);
    for (int f = 0; f < fields_; ++f) {
      std::fill(vert_.begin(), vert_.end(), acc_t(0));
      for (int64_t p_h = lo; p_h <= hi; ++p_h) {
        const acc_t w = ah_.weight(win_, p_h, q_h);
        if (w == acc_t(0)) continue;
        const acc_t* g = &ring_[(static_cast<size_t>(p_h % slots_) * fields_ + f) * n_out];
        for (int64_t p = 0; p < n_out; ++p) vert_[p] += w * g[p];
      }
      // Full (transposed) horizontal convolution into tap positions, then fold the positions back onto
      // input columns: direct ones, and the mirrored ones of reflection padding.
      std::fill(pad_.begin(), pad_.end(), acc_t(0));
      for (int j = 0; j <= 2 * r; ++j) {
        const acc_t w = win_.w[j];
        for (int64_t p = 0; p < n_out; ++p) pad_[p + j] += w * vert_[p];
      }
      // The interior is a plain add; only the few edge positions pad or reflect.
      acc_t* dst = out[f];
      const int64_t len = n_out + 2 * r;
      const auto [shift, lo, hi] = interior(aw_, win_.radius, len);
      for (int64_t u = lo; u < hi; ++u) dst[u + shift] += pad_[u];
      const auto fold_edge = [&](int64_t u) {
        const int64_t q = aw_.source(u + shift);
        if (q >= 0) dst[q] += pad_[u];
      };
      for (int64_t u = 0; u < lo; ++u) fold_edge(u);
      for (int64_t u = hi; u < len; ++u) fold_edge(u);
    }
  }

 private:
  template <typename Fill>
  void slot(int64_t p_h, Fill& fill) {
    const int s = static_cast<int>(p_h % slots_);
    if (tag_[s] == p_h) return;
    acc_t* rows[kMaxFields];
    for (int f = 0; f < fields_; ++f) rows[f] = &ring_[(static_cast<size_t>(s) * fields_ + f) * aw_.n_out];
    fill(p_h, rows);
    tag_[s] = p_h;
  }

  Window<acc_t> win_;
  Axis ah_, aw_;
  int fields_, slots_;
  std::vector<acc_t> ring_;
  std::vector<int64_t> tag_;
  std::vector<acc_t> vert_, pad_;
};

}  // namespace ssim
}  // namespace depthmetric
