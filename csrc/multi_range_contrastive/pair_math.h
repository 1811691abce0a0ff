// Per-pair math of the multi-range contrastive loss (MetricDepth Eq. 12), shared by the CPU and CUDA
// kernels, and the roll indexing that pairs each anchor pixel with its shifted sample.
#pragma once

#include <vector>

#include "common/check.h"
#include "common/dispatch.h"

namespace depthmetric {
namespace multi_range_contrastive {

constexpr int kMaxRanges = 8;

// Roll indexing with a shift already reduced to [0, n): one compare instead of an integer modulo.
template <typename index_t>
DM_HOST_DEVICE index_t roll_back(index_t i, index_t shift, index_t n) {  // index of torch.roll's source
  const index_t j = i - shift;
  return j < 0 ? j + n : j;
}
template <typename index_t>
DM_HOST_DEVICE index_t roll_forward(index_t i, index_t shift, index_t n) {  // inverse of roll_back
  const index_t j = i + shift;
  return j >= n ? j - n : j;
}
// A shift of any sign brought into [0, n) (n > 0), as Python's % does.
DM_HOST_DEVICE int64_t reduce_shift(int64_t shift, int64_t n) {
  const int64_t r = shift % n;
  return r < 0 ? r + n : r;
}

// A pair's class as one number, so kernels keep one register per pair: kIgnored, kPositive, or the margin
// (>= 0) of the negative subgroup the pair falls in.
template <typename acc_t>
struct PairCode {
  static constexpr acc_t kIgnored = acc_t(-2);
  static constexpr acc_t kPositive = acc_t(-1);
};

// Identification of a pair by its depth differential (Sec. III-B/C). Passed to kernels by value; the loops
// over subgroups are unrolled so the arrays stay in registers/constant memory, never copied to local memory.
template <typename acc_t>
struct Rule {
  acc_t r_p;
  acc_t lo[kMaxRanges];
  acc_t hi[kMaxRanges];
  acc_t margin[kMaxRanges];

  // An invalid depth, or a differential in no range, gives kIgnored. Selects, no branches, so the CPU loops
  // over a row vectorise; the ranges past those given are zero ((0, 0]) and match no differential.
  DM_HOST_DEVICE acc_t classify(acc_t anchor_depth, acc_t sample_depth) const {
    const bool valid = is_valid_depth(anchor_depth) & is_valid_depth(sample_depth);
    const acc_t dr = anchor_depth > sample_depth ? anchor_depth - sample_depth : sample_depth - anchor_depth;
    acc_t code = PairCode<acc_t>::kIgnored;
#if defined(__CUDACC__)
#pragma unroll
#endif
    for (int j = 0; j < kMaxRanges; ++j) code = (dr > lo[j]) & (dr <= hi[j]) ? margin[j] : code;
    code = dr < r_p ? PairCode<acc_t>::kPositive : code;
    return valid ? code : PairCode<acc_t>::kIgnored;
  }
};

template <typename acc_t>
DM_HOST_DEVICE bool is_counted(acc_t code) {
  return code != PairCode<acc_t>::kIgnored;
}

template <typename acc_t>
struct PairTerm {
  acc_t loss;
  acc_t coef;  // d loss / d l divided by l: the factor of (F_anchor - F_sample) in the anchor's gradient
};

// l for a positive pair, max(0, m_j - l) for a negative of subgroup j, with l the L2 feature distance.
// The coefficient is 0 at l == 0, so a zero distance gives a zero gradient, never NaN.
template <typename acc_t>
DM_HOST_DEVICE PairTerm<acc_t> pair_term(acc_t code, acc_t dist_sq) {
  const acc_t l = dm_sqrt(dist_sq);
  const acc_t inv_l = l > acc_t(0) ? acc_t(1) / l : acc_t(0);
  const acc_t gap = code - l;
  const bool positive = code == PairCode<acc_t>::kPositive, hinge = gap > acc_t(0);
  return {positive ? l : (hinge ? gap : acc_t(0)), positive ? inv_l : (hinge ? -inv_l : acc_t(0))};
}

template <typename acc_t>
Rule<acc_t> make_rule(double r_p, const std::vector<double>& lo, const std::vector<double>& hi,
                      const std::vector<double>& margins) {
  DM_CHECK(lo.size() == hi.size() && lo.size() == margins.size(),
           "range_lo, range_hi and margins must have the same length");
  DM_CHECK(static_cast<int>(lo.size()) <= kMaxRanges, "at most ", kMaxRanges, " negative ranges, got ",
           lo.size());
  Rule<acc_t> rule{};
  rule.r_p = static_cast<acc_t>(r_p);
  for (size_t j = 0; j < lo.size(); ++j) {
    rule.lo[j] = static_cast<acc_t>(lo[j]);
    rule.hi[j] = static_cast<acc_t>(hi[j]);
    rule.margin[j] = static_cast<acc_t>(margins[j]);
  }
  return rule;
}

}  // namespace multi_range_contrastive
}  // namespace depthmetric
