// Per-pixel math of the minimum reprojection loss, shared by its CPU and CUDA kernels: the weights of the
// SSIM and L1 terms, the L1 term and its slope, the mean-sources choice and the selection of a warped image
// in backward. The SSIM term itself is ssim/ssim_math.h's (box3 window, reflection padding).
#pragma once

#include <cmath>
#include <cstdint>

#include "common/dispatch.h"

namespace depthmetric {
namespace min_reprojection {

// A candidate's photometric error sums over the C channels ssim * dssim + l1 * |x - y|, with the weights
// alpha/C and (1 - alpha)/C: alpha and 1 - alpha rounded to acc_t, then divided by C in acc_t.
template <typename acc_t>
struct TermWeights {
  acc_t ssim, l1;
};

template <typename acc_t>
DM_HOST_DEVICE TermWeights<acc_t> term_weights(double alpha, int64_t channels) {
  const acc_t c = static_cast<acc_t>(channels);
  return {static_cast<acc_t>(alpha) / c, static_cast<acc_t>(1 - alpha) / c};
}

// |x - y|, and its slope sign(x - y) (0 where x == y, as torch.abs's gradient).
DM_HOST_DEVICE float l1(float diff) { return ::fabsf(diff); }
DM_HOST_DEVICE double l1(double diff) { return ::fabs(diff); }
template <typename acc_t>
DM_HOST_DEVICE acc_t l1_slope(acc_t diff) {
  return diff > acc_t(0) ? acc_t(1) : (diff < acc_t(0) ? acc_t(-1) : acc_t(0));
}

// One channel's share of a candidate's error: dssim the clamped SSIM term of the window centred on (x, y).
template <typename acc_t>
DM_HOST_DEVICE acc_t channel_error(const TermWeights<acc_t>& w, acc_t dssim, acc_t x, acc_t y) {
  return w.ssim * dssim + w.l1 * l1(x - y);
}

// The gradient of one warped input pixel x (target pixel y) from the gathered SSIM coefficients of mu_x,
// E[x^2] and E[xy] (see ssim::SsimTerms) and the L1 term's weight at the pixel's own output.
template <typename acc_t>
DM_HOST_DEVICE acc_t input_gradient(acc_t f_mx, acc_t f_sq, acc_t f_xy, acc_t x, acc_t y, acc_t l1_weight) {
  return f_mx + acc_t(2) * f_sq * x + f_xy * y + l1_weight * l1_slope(x - y);
}

// With mean_sources (Monodepth2's avg_reprojection), the warped images' average error against the identity
// sources' average (with auto-masking): winner 0 (warped) or n_warped (identity, only when strictly smaller).
template <typename acc_t>
struct MeanChoice {
  acc_t loss;
  int64_t winner;
};

template <typename acc_t>
DM_HOST_DEVICE MeanChoice<acc_t> mean_choice(acc_t warped_sum, acc_t identity_sum, int64_t n_warped,
                                             bool automask) {
  const acc_t warped = warped_sum / static_cast<acc_t>(n_warped);
  const acc_t identity = identity_sum / static_cast<acc_t>(n_warped);
  if (automask && identity < warped) return {identity, n_warped};
  return {warped, 0};
}

// The per-pixel selection of warped image s in backward: 1 where it won (min), 1/S where the warped
// average won (mean), else 0.
template <typename acc_t>
DM_HOST_DEVICE acc_t selected(int64_t winner, int64_t s, int64_t n_sources, bool mean_sources) {
  if (mean_sources) return winner == 0 ? acc_t(1) / static_cast<acc_t>(n_sources) : acc_t(0);
  return winner == s ? acc_t(1) : acc_t(0);
}

}  // namespace min_reprojection
}  // namespace depthmetric
