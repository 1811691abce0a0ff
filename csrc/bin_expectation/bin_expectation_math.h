// The logit source of depthmetric::bin_expectation (AdaBins, SQLdepth): l_k = logits_k / T, read from the
// logits tensor through its strides, T a per-pixel map (an expanded 0-d tensor for one temperature). The
// softmax-expectation itself is common/bin_softmax.h.
#pragma once

#include "common/bin_softmax.h"

namespace depthmetric {
namespace bin_expectation {

template <typename scalar_t>
struct TemperedLogits {
  using scalar_type = scalar_t;
  using acc_t = acc_type<scalar_t>;
  static constexpr int kTerms = 1;  // CPU row terms: 1/T
  StridedView4<const scalar_t> logits;
  StridedView4<const acc_t> temperature;  // B,1,H,W
  // Backward outputs (data null: not wanted, or the forward): dL/dlogits (B,K,H,W), dL/dT (B,1,H,W).
  StridedView4<scalar_t> grad_logits;
  StridedView4<acc_t> grad_temperature;

  struct Pixel {
    int64_t b, y, x;
    acc_t inv_t;
  };
  DM_HOST_DEVICE Pixel pixel(int64_t b, int64_t y, int64_t x) const {
    return {b, y, x, acc_t(1) / temperature(b, 0, y, x)};
  }
  DM_HOST_DEVICE acc_t logit(const Pixel& p, int64_t k) const {
    return static_cast<acc_t>(logits(p.b, k, p.y, p.x)) * p.inv_t;
  }
  // dL/dlogits_k = d_k / T; dL/dT = -(1/T) sum_k d_k l_k.
  DM_HOST_DEVICE void grad_bin(const Pixel& p, int64_t k, acc_t d) const {
    if (grad_logits.data != nullptr) grad_logits(p.b, k, p.y, p.x) = static_cast<scalar_t>(d * p.inv_t);
  }
  DM_HOST_DEVICE void grad_pixel(const Pixel& p, int64_t, acc_t, acc_t, acc_t dy) const {
    if (grad_temperature.data != nullptr) grad_temperature(p.b, 0, p.y, p.x) = -dy * p.inv_t;
  }

  // CPU rows (common/bin_softmax_cpu.h).
  void prepare_row(int64_t b, int64_t y, int64_t W, acc_t* __restrict__ terms) const {
    for (int64_t x = 0; x < W; ++x) terms[x] = acc_t(1) / temperature(b, 0, y, x);
  }
  void logit_row(int64_t b, int64_t y, int64_t k, int64_t W, const acc_t* __restrict__ terms,
                 acc_t* __restrict__ l) const {
    const scalar_t* __restrict__ row = &logits(b, k, y, 0);
    if (logits.s3 == 1) {
      for (int64_t x = 0; x < W; ++x) l[x] = static_cast<acc_t>(row[x]) * terms[x];
    } else {
      for (int64_t x = 0; x < W; ++x) l[x] = static_cast<acc_t>(row[x * logits.s3]) * terms[x];
    }
  }
  void grad_bin_row(int64_t b, int64_t y, int64_t k, int64_t W, const acc_t* __restrict__ terms,
                    const acc_t* __restrict__ d) const {
    if (grad_logits.data == nullptr) return;
    scalar_t* __restrict__ row = &grad_logits(b, k, y, 0);  // a fresh contiguous tensor
    for (int64_t x = 0; x < W; ++x) row[x] = static_cast<scalar_t>(d[x] * terms[x]);
  }
  void grad_pixel_row(int64_t b, int64_t y, int64_t, int64_t W, const acc_t* __restrict__ terms, const acc_t*,
                      const acc_t*, const acc_t* __restrict__ dy) const {
    if (grad_temperature.data == nullptr) return;
    for (int64_t x = 0; x < W; ++x) grad_temperature(b, 0, y, x) = -dy[x] * terms[x];
  }
};

}  // namespace bin_expectation
}  // namespace depthmetric
