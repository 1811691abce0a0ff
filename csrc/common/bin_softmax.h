// The core of the bin heads (depthmetric::bin_expectation, depthmetric::log_binomial_expectation), written
// once for the CPU and CUDA kernels of both: depth = sum_k softmax_k(l) c_k per pixel, with the centres c
// (B,K,h,w; per image is h = w = 1) resampled to H,W as F.interpolate(mode="bilinear", align_corners=True)
// does, and the gather of the centres' gradient. Templated on a logit Source: where l_k of a pixel comes
// from (read from a tensor and tempered, or ZoeDepth's log-binomial of p and t). A Source provides
//   Pixel pixel(b, y, x)             the per-pixel terms (1/T, log p, ...)
//   acc_t logit(const Pixel&, k)     l_k
//   void grad_bin(const Pixel&, k, d)          d = dL/dl_k: writes what depends on bin k (dL/dlogits)
//   void grad_pixel(const Pixel&, K, d0, d1, dy)  sum_k d_k, sum_k k d_k, sum_k d_k l_k: the per-pixel rest
//                                                (dy summed as sum_k d_k (l_k - lse), see pixel_backward)
// and, for the CPU kernel's rows, the same as row loops (see common/bin_softmax_cpu.h).
// Nothing of size B x K x H x W is kept: the forward keeps log-sum-exp and depth per pixel (the stats),
// and the backward recomputes prob_k = exp(l_k - lse) from them.
#pragma once

#include <cstdint>
#include <cstring>

#include "common/dispatch.h"
#include "common/strided_view.h"

namespace depthmetric {
namespace bin_softmax {

// exp of the softmax, for x <= ~0 (a logit minus the row maximum or the log-sum-exp). On the host a
// polynomial that GCC vectorises (glibc's expf is a call per element): x = n ln2 + r with |r| <= ln2/2
// (n rounded by the 1.5 * 2^23 trick, ln2 split hi + lo), exp(r) by Cephes' degree-6 polynomial (within
// 2 ulp), times 2^n built in the exponent bits. x below -87 gives 0 (exp(-87) ~ 1.6e-38: no subnormals,
// whose arithmetic costs ~100x on x86; a probability that small changes nothing). On the GPU expf.
DM_HOST_DEVICE float softmax_exp(float x) {
#if defined(__CUDA_ARCH__)
  return ::expf(x);
#else
  const float keep = x >= -87.f ? 1.f : 0.f;
  x = x < -87.f ? -87.f : (x > 88.f ? 88.f : x);
  const float n = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float e = p * r * r + r + 1.f;
  const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  return e * scale * keep;
#endif
}
DM_HOST_DEVICE double softmax_exp(double x) { return ::exp(x); }

DM_HOST_DEVICE float bin_log(float x) { return ::logf(x); }
DM_HOST_DEVICE double bin_log(double x) { return ::log(x); }

// ---------------------------------------------------------------------------------------------------------
// Bilinear resampling with align_corners=True, as ATen's upsample_bilinear2d: along an axis of `in` source
// and `out` output samples, output d reads source scale * d (scale = (in-1)/(out-1) in acc_t, 0 for a single
// output), i0 = min(floor, in-1), i1 = min(i0+1, in-1), weights 1-lambda and lambda (lambda clamped to [0,1]).

template <typename acc_t>
struct Axis {
  int64_t in, out;
  acc_t scale;
};

template <typename acc_t>
DM_HOST_DEVICE Axis<acc_t> make_axis(int64_t in, int64_t out) {
  return {in, out, out > 1 ? static_cast<acc_t>(in - 1) / static_cast<acc_t>(out - 1) : acc_t(0)};
}

template <typename acc_t>
struct Tap {
  int64_t i0, i1;
  acc_t lambda;
};

template <typename acc_t>
DM_HOST_DEVICE Tap<acc_t> tap(const Axis<acc_t>& a, int64_t d) {
  const acc_t real = a.scale * static_cast<acc_t>(d);
  int64_t i0 = static_cast<int64_t>(real);  // real >= 0: truncation is floor
  i0 = i0 < a.in - 1 ? i0 : a.in - 1;
  const int64_t i1 = i0 + 1 < a.in - 1 ? i0 + 1 : a.in - 1;
  acc_t lambda = real - static_cast<acc_t>(i0);
  lambda = lambda < acc_t(0) ? acc_t(0) : (lambda > acc_t(1) ? acc_t(1) : lambda);
  return {i0, i1, lambda};
}

// The weight with which an output reading through t takes source sample s (both taps may be s).
template <typename acc_t>
DM_HOST_DEVICE acc_t tap_weight(const Tap<acc_t>& t, int64_t s) {
  return (t.i0 == s ? acc_t(1) - t.lambda : acc_t(0)) + (t.i1 == s ? t.lambda : acc_t(0));
}

// The outputs [lo, hi] that may read source sample s, conservatively (one output of slack on each side for
// the rounding of scale * d); the gather recomputes each candidate's tap exactly and keeps those that read s.
template <typename acc_t>
DM_HOST_DEVICE void reading_range(const Axis<acc_t>& a, int64_t s, int64_t& lo, int64_t& hi) {
  if (a.in == 1 || a.out == 1) {  // every output reads sample 0 (and, with one output, sample 1 at weight 0)
    lo = 0;
    hi = a.out - 1;
    return;
  }
  const double scale = static_cast<double>(a.in - 1) / static_cast<double>(a.out - 1);
  lo = static_cast<int64_t>((static_cast<double>(s) - 1.0) / scale) - 1;
  hi = static_cast<int64_t>((static_cast<double>(s) + 1.0) / scale) + 2;
  lo = lo < 0 ? 0 : lo;
  hi = hi > a.out - 1 ? a.out - 1 : hi;
}

// The bilinear blend of the four source samples (x_row,col) with row weight ly and column weight lx, in
// ATen's order of operations; the one formula of the CPU rows and the GPU threads.
template <typename acc_t>
DM_HOST_DEVICE acc_t bilinear(acc_t x00, acc_t x01, acc_t x10, acc_t x11, acc_t ly, acc_t lx) {
  const acc_t wx0 = acc_t(1) - lx, wy0 = acc_t(1) - ly;
  return wy0 * (wx0 * x00 + lx * x01) + ly * (wx0 * x10 + lx * x11);
}

// Centre k of image b at the output pixel with row tap ty and column tap tx.
template <typename scalar_t, typename acc_t>
DM_HOST_DEVICE acc_t centre(const StridedView4<const scalar_t>& c, int64_t b, int64_t k, const Tap<acc_t>& ty,
                            const Tap<acc_t>& tx) {
  return bilinear(static_cast<acc_t>(c(b, k, ty.i0, tx.i0)), static_cast<acc_t>(c(b, k, ty.i0, tx.i1)),
                  static_cast<acc_t>(c(b, k, ty.i1, tx.i0)), static_cast<acc_t>(c(b, k, ty.i1, tx.i1)), ty.lambda,
                  tx.lambda);
}

// ---------------------------------------------------------------------------------------------------------
// One pixel, every bin: the GPU's thread per pixel (the CPU runs the same steps over rows).

template <typename acc_t>
struct Stats {
  acc_t lse, depth;  // log sum_k exp(l_k), and sum_k prob_k c_k
};

// Online softmax in one read of the logits: the running maximum m, sum s = sum exp(l - m) and
// e = sum exp(l - m) c, rescaled when the maximum grows.
template <typename Source, typename scalar_t, typename acc_t>
DM_HOST_DEVICE Stats<acc_t> pixel_forward(const Source& src, const typename Source::Pixel& px,
                                          const StridedView4<const scalar_t>& c, int64_t b, int64_t K,
                                          const Tap<acc_t>& ty, const Tap<acc_t>& tx) {
  acc_t m = src.logit(px, 0), s = acc_t(1), e = centre(c, b, 0, ty, tx);
  for (int64_t k = 1; k < K; ++k) {
    const acc_t l = src.logit(px, k), ck = centre(c, b, k, ty, tx);
    if (l > m) {
      const acc_t r = softmax_exp(m - l);
      s = s * r + acc_t(1);
      e = e * r + ck;
      m = l;
    } else {
      const acc_t z = softmax_exp(l - m);
      s += z;
      e += z * ck;
    }
  }
  return {m + bin_log(s), e / s};
}

// dL/dl_k = g prob_k (c_k - depth) for every bin, handed to the source (grad_bin, grad_pixel). dy is
// sum_k d_k l_k, the temperatures' term, summed as sum_k d_k (l_k - lse): the same, as sum_k d_k = 0, with
// terms that do not cancel (a bin far from the maximum has a negligible d_k), so float32 keeps its digits.
template <typename Source, typename scalar_t, typename acc_t>
DM_HOST_DEVICE void pixel_backward(const Source& src, const typename Source::Pixel& px,
                                   const StridedView4<const scalar_t>& c, int64_t b, int64_t K, const Tap<acc_t>& ty,
                                   const Tap<acc_t>& tx, acc_t g, Stats<acc_t> st) {
  acc_t d0 = 0, d1 = 0, dy = 0;
  for (int64_t k = 0; k < K; ++k) {
    const acc_t log_prob = src.logit(px, k) - st.lse;
    const acc_t d = g * softmax_exp(log_prob) * (centre(c, b, k, ty, tx) - st.depth);
    src.grad_bin(px, k, d);
    d0 += d;
    d1 += static_cast<acc_t>(k) * d;
    dy += d * log_prob;
  }
  src.grad_pixel(px, K, d0, d1, dy);
}

// The centres' gradient at source cell (b, k, i, j) from one candidate output pixel: g prob_k times the
// bilinear weight with which the pixel read the cell (0 when it did not).
template <typename Source, typename acc_t>
DM_HOST_DEVICE acc_t cell_term(const Source& src, int64_t b, int64_t k, int64_t i, int64_t j, int64_t y, int64_t x,
                               const Axis<acc_t>& ay, const Axis<acc_t>& ax, acc_t g, acc_t lse) {
  const acc_t w = tap_weight(tap(ay, y), i) * tap_weight(tap(ax, x), j);
  if (w == acc_t(0)) return acc_t(0);
  return w * g * softmax_exp(src.logit(src.pixel(b, y, x), k) - lse);
}

}  // namespace bin_softmax
}  // namespace depthmetric
