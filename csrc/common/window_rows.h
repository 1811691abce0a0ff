// Row-at-a-time window statistics for the CPU kernels of depthmetric::ssim and depthmetric::min_reprojection.
// Everything runs on contiguous acc_t row buffers in simple loops over a row, so the compiler vectorises
// them; the separable window costs 2 (2r+1) multiply-adds per statistic and pixel. The tap loops have a
// compile-time length (3 or 11, see with_taps), so they unroll into the loop over a row: each output sums
// its taps in registers and is stored once, instead of one pass over a row buffer per tap.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "common/check.h"
#include "common/dispatch.h"
#include "ssim/ssim_math.h"

namespace depthmetric {

// A row of n elements stride apart, read in place when contiguous, else gathered into buf (n entries).
template <typename T>
const T* contiguous_row(const T* row, int64_t stride, int64_t n, std::vector<T>& buf) {
  if (stride == 1) return row;
  for (int64_t i = 0; i < n; ++i) buf[i] = row[i * stride];
  return buf.data();
}

// A padded row of len entries, entry u at tap position u - r of the first output: entry u reads input
// column u + shift, and the entries [lo, hi) are the ones inside the image (no padding or reflection).
struct Interior {
  int64_t shift, lo, hi;
};

inline Interior interior(const ssim::Axis& a, int r, int64_t len) {
  const int64_t shift = a.offset - r;
  return {shift, std::max<int64_t>(0, -shift), std::min<int64_t>(len, a.n - shift)};
}

// Calls f(std::integral_constant<int, 2r + 1>) for the window's radius r (box3: 1, gauss11: 5).
template <typename F>
void with_taps(int radius, F&& f) {
  if (radius == 1) {
    f(std::integral_constant<int, 3>{});
  } else {
    DM_CHECK(radius == ssim::kMaxRadius, "internal: window radius ", radius);
    f(std::integral_constant<int, 2 * ssim::kMaxRadius + 1>{});
  }
}

// A window's taps are all equal when it has 3 (box3, make_window's 1/3): its sums add the taps first and
// scale once, half the operations of a weighted sum (and the order of an average pool). The 11 taps of
// gauss11 are weighted one by one. Only the window's own weights come in here; weighted_rows takes any.
template <int T>
constexpr bool kEqualTaps = T == 3;

// The window the row helpers are given must keep that promise (checked where they are set up).
template <typename acc_t>
void check_window_taps(const ssim::Window<acc_t>& win) {
  const bool equal = win.w[0] == win.w[1] && win.w[1] == win.w[2];
  DM_CHECK(2 * win.radius + 1 != 3 || equal, "internal: a 3-tap window with unequal taps");
}

// out[i] = sum_k w[k] * in[i + k], k < T, for i < n (a correlation along a row; T taps summed in order).
// w: a window's weights (see kEqualTaps).
template <int T, typename acc_t>
void correlate_row(const acc_t* w, int64_t n, const acc_t* __restrict__ in, acc_t* __restrict__ out) {
  if constexpr (kEqualTaps<T>) {
    const acc_t w0 = w[0];
    for (int64_t i = 0; i < n; ++i) out[i] = w0 * (in[i] + in[i + 1] + in[i + 2]);
    return;
  }
  acc_t wk[T];
  std::copy(w, w + T, wk);
  for (int64_t i = 0; i < n; ++i) {
    acc_t acc = 0;
    for (int k = 0; k < T; ++k) acc += wk[k] * in[i + k];
    out[i] = acc;
  }
}

// out[u] = sum_k w[k] * rows[k][u] for u < n (the vertical taps of one row; T rows summed in order).
template <int T, typename acc_t>
void weighted_rows(const acc_t* w, const acc_t* const* rows, int64_t n, acc_t* __restrict__ out) {
  acc_t wk[T];
  const acc_t* rk[T];
  std::copy(w, w + T, wk);
  std::copy(rows, rows + T, rk);
  for (int64_t u = 0; u < n; ++u) {
    acc_t acc = 0;
    for (int k = 0; k < T; ++k) acc += wk[k] * rk[k][u];
    out[u] = acc;
  }
}

// The input rows one output row reads from one B,C plane, converted to acc_t and padded along the row:
// entry u of a row is tap position t = u + offset - r, so output p's window is entries p .. p + 2r. Tap k
// (offset k - r) is row(k), a row of zeros for a zero-padded one. The converted rows are kept in a ring of
// 2r+1 slots keyed by their source row, so the next output row of the same image converts one new row,
// not 2r+1 (the 2r+1 source rows of one output row fall in distinct slots, reflected or not).
template <typename acc_t>
class RowTaps {
 public:
  RowTaps(const ssim::Window<acc_t>& win, const ssim::Axis& ah, const ssim::Axis& aw)
      : win_(win), ah_(ah), aw_(aw), len_(aw.n_out + 2 * win.radius), slots_(2 * win.radius + 1),
        data_(slots_ * len_), zero_(len_, acc_t(0)), tag_(slots_, nullptr) {
    check_window_taps(win);
  }

  template <typename scalar_t>
  void load(const StridedView4<const scalar_t>& v, int64_t b, int64_t c, int64_t p_h) {
    for (int d = -win_.radius; d <= win_.radius; ++d) {
      const int64_t row = ah_.source(p_h + ah_.offset + d);
      rows_[d + win_.radius] = row < 0 ? zero_.data() : converted(v, &v(b, c, row, 0), row);
    }
  }

  int64_t len() const { return len_; }
  const acc_t* weights() const { return win_.w; }
  const acc_t* const* rows() const { return rows_; }
  // The input values at the centres of the outputs' windows, entry p for output p (never padding).
  const acc_t* centre() const { return rows_[win_.radius] + win_.radius; }

 private:
  template <typename scalar_t>
  const acc_t* converted(const StridedView4<const scalar_t>& v, const scalar_t* src, int64_t row) {
    const int64_t s = row % slots_;
    acc_t* dst = &data_[s * len_];
    if (tag_[s] == src) return dst;  // a row of the same tensor: the same data (inputs are read-only)
    tag_[s] = src;
    // The interior is a plain (vectorisable) converting copy; only the few edge entries pad or reflect,
    // after it, when their input columns are in cache (read first, each edge waited on memory).
    const auto [shift, lo, hi] = interior(aw_, win_.radius, len_);
    if (v.s3 == 1) {
      for (int64_t u = lo; u < hi; ++u) dst[u] = static_cast<acc_t>(src[u + shift]);
    } else {
      for (int64_t u = lo; u < hi; ++u) dst[u] = static_cast<acc_t>(src[(u + shift) * v.s3]);
    }
    const auto edge = [&](int64_t u) {
      const int64_t col = aw_.source(u + shift);
      dst[u] = col < 0 ? acc_t(0) : static_cast<acc_t>(src[col * v.s3]);
    };
    for (int64_t u = 0; u < lo; ++u) edge(u);
    for (int64_t u = hi; u < len_; ++u) edge(u);
    // The next input row of the plane is the one the next output row converts: ask for it now, so that it
    // comes from memory while this row's work runs (the copies waited on memory: one new row per image and
    // channel, more streams than the hardware prefetcher follows). Here, not in a function of its own,
    // which GCC finds free of side effects and drops. A prefetch past the tensor's end is harmless.
    if (v.s3 == 1) {
      for (int64_t i = 0; i < aw_.n; i += kLine<scalar_t>) __builtin_prefetch(src + v.s2 + i);
    }
    return dst;
  }

  template <typename scalar_t>
  static constexpr int64_t kLine = 64 / sizeof(scalar_t);  // elements per cache line

  ssim::Window<acc_t> win_;
  ssim::Axis ah_, aw_;
  int64_t len_;
  int slots_;
  std::vector<acc_t> data_, zero_;
  std::vector<const void*> tag_;
  const acc_t* rows_[2 * ssim::kMaxRadius + 1] = {};
};

// The vertical sums of a (b == nullptr) and a*a, or of a, a*a and a*b, over one row: T taps, in registers.
// w: the window's weights (see kEqualTaps).
template <int T, typename acc_t>
void vertical_moments(const acc_t* w, const acc_t* const* ra, const acc_t* const* rb, int64_t n,
                      acc_t* __restrict__ s, acc_t* __restrict__ ss, acc_t* __restrict__ sab) {
  acc_t wk[T];
  const acc_t* a[T];
  const acc_t* b[T];
  std::copy(w, w + T, wk);
  std::copy(ra, ra + T, a);
  // Tap k's weight, or 1 when the taps are equal and the sum is scaled by w[0] at the end.
  const auto tap = [&](int k) { return kEqualTaps<T> ? acc_t(1) : wk[k]; };
  const acc_t scale = kEqualTaps<T> ? wk[0] : acc_t(1);
  if (rb == nullptr) {
    for (int64_t u = 0; u < n; ++u) {
      acc_t m = 0, mm = 0;
      for (int k = 0; k < T; ++k) {
        m += tap(k) * a[k][u];
        mm += tap(k) * a[k][u] * a[k][u];
      }
      s[u] = scale * m;
      ss[u] = scale * mm;
    }
    return;
  }
  std::copy(rb, rb + T, b);
  for (int64_t u = 0; u < n; ++u) {
    acc_t m = 0, mm = 0, mab = 0;
    for (int k = 0; k < T; ++k) {
      m += tap(k) * a[k][u];
      mm += tap(k) * a[k][u] * a[k][u];
      mab += tap(k) * a[k][u] * b[k][u];
    }
    s[u] = scale * m;
    ss[u] = scale * mm;
    sab[u] = scale * mab;
  }
}

// The five window moments of one output row of (x, y); the y moments can be kept across several x.
template <typename acc_t>
struct MomentRow {
  explicit MomentRow(int64_t n_out, int64_t len)
      : n(n_out), mx(n_out), my(n_out), xx(n_out), yy(n_out), xy(n_out), v0(len), v1(len), v2(len) {}

  void compute_y(const ssim::Window<acc_t>& win, const RowTaps<acc_t>& y) {
    with_taps(win.radius, [&](auto taps) {
      constexpr int T = decltype(taps)::value;
      vertical_moments<T>(y.weights(), y.rows(), static_cast<const acc_t* const*>(nullptr), y.len(), v0.data(),
                          v1.data(), static_cast<acc_t*>(nullptr));
      correlate_row<T>(win.w, n, v0.data(), my.data());
      correlate_row<T>(win.w, n, v1.data(), yy.data());
    });
  }
  void compute_x(const ssim::Window<acc_t>& win, const RowTaps<acc_t>& x, const RowTaps<acc_t>& y) {
    with_taps(win.radius, [&](auto taps) {
      constexpr int T = decltype(taps)::value;
      vertical_moments<T>(x.weights(), x.rows(), y.rows(), x.len(), v0.data(), v1.data(), v2.data());
      correlate_row<T>(win.w, n, v0.data(), mx.data());
      correlate_row<T>(win.w, n, v1.data(), xx.data());
      correlate_row<T>(win.w, n, v2.data(), xy.data());
    });
  }
  ssim::Moments<acc_t> at(int64_t p) const { return {mx[p], my[p], xx[p], yy[p], xy[p]}; }

  int64_t n;
  std::vector<acc_t> mx, my, xx, yy, xy, v0, v1, v2;  // v*: vertical sums, len entries
};

// The transpose of the window for backward: given per-output coefficient rows G(p_h, .), accumulate for
// input row q_h the sums  sum_p W_h(p_h, q_h) W_w(p_w, q) G(p_h, p_w)  for every input column q.
// Coefficient rows come from a small ring of the last 2r+1 output rows, each filled once by `fill`.
template <typename acc_t>
class TransposedRows {
 public:
  TransposedRows(const ssim::Window<acc_t>& win, const ssim::Axis& ah, const ssim::Axis& aw, int n_fields)
      : win_(win), ah_(ah), aw_(aw), fields_(n_fields), slots_(2 * win.radius + 1),
        ring_(static_cast<size_t>(slots_) * n_fields * aw.n_out), tag_(slots_, -1), zero_(aw.n_out, acc_t(0)),
        vert_(aw.n_out + 4 * win.radius, acc_t(0)) {
    DM_CHECK(n_fields <= kMaxFields, "at most ", kMaxFields, " coefficient fields");
    const auto [shift, lo, hi] = interior(aw, win.radius, aw.n_out + 2 * win.radius);
    DM_CHECK(lo + shift == 0 && hi - lo == aw.n, "internal: the transposed window's interior misses columns");
    check_window_taps(win);
  }

  static constexpr int kMaxFields = 4;

  // Forget the cached rows (before moving to another plane).
  void reset() { std::fill(tag_.begin(), tag_.end(), int64_t(-1)); }

  // fill(p_h, field_rows) writes n_fields rows of aw.n_out coefficients for output row p_h;
  // out[f] receives aw.n input columns of field f, or is null for a field not wanted (fill may leave its
  // rows unwritten: they are not read).
  template <typename Fill>
  void gather(int64_t q_h, Fill&& fill, acc_t* const* out) {
    with_taps(win_.radius, [&](auto taps) { gather_taps<decltype(taps)::value>(q_h, fill, out); });
  }

 private:
  template <int T, typename Fill>
  void gather_taps(int64_t q_h, Fill& fill, acc_t* const* out) {
    const int64_t n_out = aw_.n_out, r = win_.radius;
    const int64_t lo = ah_.first_output(q_h, win_.radius), hi = ah_.last_output(q_h, win_.radius);
    // Output row p_h = q_h - offset - r + k is tap k; rows outside [lo, hi] or of weight 0 read zeros.
    acc_t w[T];
    int64_t src[T];
    for (int k = 0; k < T; ++k) {
      const int64_t p_h = q_h - ah_.offset - r + k;
      w[k] = p_h >= lo && p_h <= hi ? ah_.weight(win_, p_h, q_h) : acc_t(0);
      src[k] = w[k] == acc_t(0) ? -1 : p_h;
      if (src[k] >= 0) slot(src[k], fill);
    }
    acc_t* vert = &vert_[2 * r];  // 2r zeros on either side: the transposed taps run over a full window
    // Full (transposed) horizontal convolution into tap positions u, sum_j w_j vert[u - j] (the taps
    // reversed: a correlation), folded back onto input columns: the interior positions are the columns
    // themselves, every one of them (checked at set-up), written straight; the mirrored edge positions of
    // reflection padding are added to theirs.
    acc_t flipped[T];
    std::reverse_copy(win_.w, win_.w + T, flipped);
    const int64_t len = n_out + 2 * r;
    const auto [shift, in_lo, in_hi] = interior(aw_, win_.radius, len);
    for (int f = 0; f < fields_; ++f) {
      if (out[f] == nullptr) continue;
      const acc_t* rows[T];
      for (int k = 0; k < T; ++k) {
        rows[k] = src[k] < 0 ? zero_.data() : &ring_[(static_cast<size_t>(src[k] % slots_) * fields_ + f) * n_out];
      }
      weighted_rows<T>(w, rows, n_out, vert);
      acc_t* dst = out[f];
      correlate_row<T>(flipped, in_hi - in_lo, vert_.data() + in_lo, dst + in_lo + shift);
      const auto fold_edge = [&](int64_t u) {
        const int64_t q = aw_.source(u + shift);
        if (q < 0) return;
        acc_t at;
        correlate_row<T>(flipped, 1, vert_.data() + u, &at);
        dst[q] += at;
      };
      for (int64_t u = 0; u < in_lo; ++u) fold_edge(u);
      for (int64_t u = in_hi; u < len; ++u) fold_edge(u);
    }
  }

  template <typename Fill>
  void slot(int64_t p_h, Fill& fill) {
    const int s = static_cast<int>(p_h % slots_);
    if (tag_[s] == p_h) return;
    acc_t* rows[kMaxFields];
    for (int f = 0; f < fields_; ++f) rows[f] = &ring_[(static_cast<size_t>(s) * fields_ + f) * aw_.n_out];
    fill(p_h, rows);
    tag_[s] = p_h;
  }

  ssim::Window<acc_t> win_;
  ssim::Axis ah_, aw_;
  int fields_, slots_;
  std::vector<acc_t> ring_;
  std::vector<int64_t> tag_;
  std::vector<acc_t> zero_, vert_;  // vert_: a row of vertical sums with 2r zeros on either side
};

}  // namespace depthmetric
