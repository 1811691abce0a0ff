// CPU kernels of depthmetric::order_statistics. A task is one region (b, r): one pass over its rows copies its
// members into a scratch buffer and counts the top bits of their order-preserving keys (a histogram of about
// area / 4 buckets, at most 2^16); a pass
// over the copy gathers the members of the buckets that hold the lower median (sorted index (n - 1) / 2) and, for the trimmed sum, the keep-th
// smallest value (the threshold), from which std::nth_element selects them; then the MAD, the median's
// lowest flat index among ties, the counts below/at the threshold and the trimmed sum
// sum(v < thr) + (keep - below) * thr, as partial sums of fixed row chunks added in order (deterministic at
// any thread count). A region alone (a batch pooled into one) spreads its chunks over the threads. No sort,
// nothing of size B x R x H x W. The backward gives a task a chunk of rows of one image: its pixels gather
// the R regions' gradients into one acc_t buffer in region order (deterministic at any thread count, no
// atomics).
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

#include "common/tensor_views.h"
#include "order_statistics/cpu/order_statistics_blocks.h"
#include "order_statistics/order_statistics.h"
#include "order_statistics/order_statistics_math.h"

namespace depthmetric {
namespace order_statistics {
namespace {

// The radix of the selection: a histogram of the top bits of the values' order-preserving keys, about a
// quarter as many buckets as the region has pixels, at most 2^kMaxRadixBits (not a block size: no boundary
// to cross), so that a small region (HDN's one-row runs) pays for a small histogram.
constexpr int kMaxRadixBits = 16;

inline int radix_bits(int64_t area) {
  int bits = 1;  // at least one: a shift by the key's whole width would be undefined
  while (bits < kMaxRadixBits && (int64_t{4} << bits) < area) ++bits;
  return bits;
}

template <typename acc_t>
inline uint32_t bucket_of(acc_t v, int shift) {
  return static_cast<uint32_t>(ordered_key(v) >> shift);
}

// One chunk's part of the statistics (combined in chunk order, so the sums do not depend on the threads).
template <typename acc_t>
struct Partial {
  acc_t mad = 0, below_sum = 0;
  int64_t sign_sum = 0, first = -1, below = 0, equal = 0;
};

// The q-th smallest (0-based) of the members, from the histogram: the bucket holding rank q, then
// std::nth_element over that bucket's members alone (their order does not matter).
template <typename acc_t>
struct Rank {
  int64_t q = -1, in_bucket = 0;
  uint32_t bucket = 0;
  std::vector<acc_t> values;
  void locate(const std::vector<int64_t>& hist) {
    int64_t before = 0;
    for (uint32_t k = 0; k < hist.size(); ++k) {
      if (before + hist[k] > q) {
        bucket = k;
        in_bucket = q - before;
        values.reserve(hist[k]);
        return;
      }
      before += hist[k];
    }
  }
  acc_t select() {
    std::nth_element(values.begin(), values.begin() + in_bucket, values.end());
    return values[in_bucket];
  }
};

// Region (b, reg), in chunks of kChunkRows rows that run in parallel when this region is the only task (a
// batch pooled into one region) and in line inside the regions' own loop otherwise. Pass 1 reads the
// region: each chunk's members, in flat order, into its own segment of a scratch buffer (and their offsets in
// the chunk, for the median's index), and the histogram of their keys' top bits. Pass 2 gathers the members
// of the buckets holding the lower median (sorted index (n - 1) / 2) and the keep-th smallest value, which
// std::nth_element selects. Pass 3: each chunk's MAD, signs and first index of the median, and sum and
// counts below / at the threshold, added in chunk order.
template <typename scalar_t>
void one_region(const Inputs<scalar_t>& in, const Region& reg, int64_t b, int64_t W, double trim, int64_t keep_rule,
                bool with_median, acc_type<scalar_t>* s, int64_t* c) {
  using acc_t = acc_type<scalar_t>;
  for (int64_t k = 0; k < kNumStats; ++k) s[k] = acc_t(0);
  for (int64_t k = 0; k < kNumCounts; ++k) c[k] = 0;
  c[kMedianIndex] = -1;
  if (reg.y1 <= reg.y0 || reg.x1 <= reg.x0) return;
  const int64_t cols = reg.x1 - reg.x0, chunk_size = kChunkRows * cols;
  const int64_t chunks = (reg.y1 - reg.y0 + kChunkRows - 1) / kChunkRows;
  const int64_t area = (reg.y1 - reg.y0) * cols;
  std::unique_ptr<acc_t[]> buf(new acc_t[area]);  // uninitialised: each chunk fills its segment's front
  std::unique_ptr<uint32_t[]> offset(with_median ? new uint32_t[area] : nullptr);
  const int bits = radix_bits(area);
  const int shift = 8 * int(sizeof(typename KeyType<acc_t>::type)) - bits;
  std::vector<int64_t> filled(chunks), hist(size_t(1) << bits, 0);
  std::mutex lock;
  const bool plain = reg.lo == -INFINITY && reg.hi == INFINITY && reg.id < 0;
  torch::stable::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> local(hist.size(), 0);  // integers: merged in any order
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t i0 = reg.y0 + chunk * kChunkRows, i1 = std::min(reg.y1, i0 + kChunkRows);
      acc_t* dst = buf.get() + chunk * chunk_size;
      uint32_t* off = with_median ? offset.get() + chunk * chunk_size : nullptr;
      int64_t m = 0;
      for (int64_t i = i0; i < i1; ++i) {
        // A plain region (no key range, no label) tests the mask alone, through row pointers.
        const scalar_t* vrow = &in.values(b, 0, i, 0);
        const bool* okrow = &in.valid(b, 0, i, 0);
        const int64_t vs = in.values.s3, oks = in.valid.s3;
        for (int64_t j = reg.x0; j < reg.x1; ++j) {
          if (plain ? !okrow[j * oks] : !member(in, reg, b, i, j)) continue;
          const acc_t v = static_cast<acc_t>(vrow[j * vs]) + acc_t(0);  // value_at: -0 made +0
          ++local[bucket_of(v, shift)];
          if (off) off[m] = static_cast<uint32_t>((i - i0) * cols + (j - reg.x0));
          dst[m++] = v;
        }
      }
      filled[chunk] = m;
    }
    const std::lock_guard<std::mutex> guard(lock);
    for (size_t k = 0; k < local.size(); ++k) hist[k] += local[k];
  });
  int64_t n = 0;
  for (const int64_t m : filled) n += m;
  if (n == 0) return;
  c[kCount] = n;
  const int64_t keep = kept_count(n, trim, keep_rule);
  Rank<acc_t> median, cut;
  if (with_median) median.q = (n - 1) / 2;  // torch's lower middle
  if (keep > 0) cut.q = keep - 1;
  if (median.q < 0 && cut.q < 0) return;
  if (median.q >= 0) median.locate(hist);
  if (cut.q >= 0) cut.locate(hist);
  torch::stable::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> at_median, at_cut;
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const acc_t* v = buf.get() + chunk * chunk_size;
      for (int64_t k = 0; k < filled[chunk]; ++k) {
        const uint32_t bucket = bucket_of(v[k], shift);
        if (median.q >= 0 && bucket == median.bucket) at_median.push_back(v[k]);
        if (cut.q >= 0 && bucket == cut.bucket) at_cut.push_back(v[k]);
      }
    }
    const std::lock_guard<std::mutex> guard(lock);
    median.values.insert(median.values.end(), at_median.begin(), at_median.end());
    cut.values.insert(cut.values.end(), at_cut.begin(), at_cut.end());
  });
  const acc_t med = median.q >= 0 ? median.select() : acc_t(0);
  const acc_t thr = cut.q >= 0 ? cut.select() : acc_t(0);
  std::vector<Partial<acc_t>> parts(chunks);
  torch::stable::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const acc_t* v = buf.get() + chunk * chunk_size;
      const int64_t m = filled[chunk];
      Partial<acc_t>& p = parts[chunk];
      // kLanes interleaved partial sums (member k adds into lane k % kLanes): independent chains, no branch.
      if (median.q >= 0) {
        acc_t mad[kLanes] = {};
        for (int64_t k = 0; k < m; ++k) {
          mad[k % kLanes] += std::abs(v[k] - med);
          p.sign_sum += (v[k] > med) - (v[k] < med);
        }
        for (int64_t l = 0; l < kLanes; ++l) p.mad += mad[l];
        for (int64_t k = 0; k < m && p.first < 0; ++k)
          if (v[k] == med) {
            const int64_t o = offset[chunk * chunk_size + k];
            p.first = (reg.y0 + chunk * kChunkRows + o / cols) * W + reg.x0 + o % cols;
          }
      }
      if (cut.q >= 0) {
        acc_t below_sum[kLanes] = {};
        for (int64_t k = 0; k < m; ++k) {
          below_sum[k % kLanes] += v[k] * static_cast<acc_t>(v[k] < thr);
          p.below += v[k] < thr;
          p.equal += v[k] == thr;
        }
        for (int64_t l = 0; l < kLanes; ++l) p.below_sum += below_sum[l];
      }
    }
  });
  Partial<acc_t> total;
  for (const Partial<acc_t>& p : parts) {
    total.mad += p.mad;
    total.below_sum += p.below_sum;
    total.sign_sum += p.sign_sum;
    total.below += p.below;
    total.equal += p.equal;
    if (total.first < 0) total.first = p.first;
  }
  if (median.q >= 0) {
    s[kMedian] = med;
    s[kMad] = total.mad / static_cast<acc_t>(n);
    c[kMedianIndex] = total.first;
    c[kSignSum] = total.sign_sum;
  }
  if (cut.q >= 0) {
    s[kTrimmed] = total.below_sum + static_cast<acc_t>(keep - total.below) * thr;
    s[kThreshold] = thr;
    c[kBelow] = total.below;
    c[kEqual] = total.equal;
  }
}

template <typename scalar_t>
void forward_regions(const Tensor& values, const Tensor& valid, const Tensor& key, const Tensor& labels,
                     const Tensor& boxes, const Tensor& ranges, const Tensor& ids, double trim, int64_t keep_rule,
                     bool with_median, Tensor& stats, Tensor& counts) {
  using acc_t = acc_type<scalar_t>;
  const int64_t B = boxes.size(0), R = boxes.size(1), H = values.size(1), W = values.size(2);
  const auto in = inputs_of<scalar_t>(values, valid, key, labels);
  const int64_t* bx = data_of<const int64_t>(boxes);
  const double* rg = data_of<const double>(ranges);
  const int64_t* id = data_of<const int64_t>(ids);
  acc_t* st = data_of<acc_t>(stats);
  int64_t* ct = data_of<int64_t>(counts);
  // A task per region; one region alone (B * R == 1) runs outside a parallel region, so its chunks spread.
  torch::stable::parallel_for(0, B * R, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t)
      one_region(in, region_of(bx, rg, id, t, H, W), t / R, W, trim, keep_rule, with_median, st + t * kNumStats,
                 ct + t * kNumCounts);
  });
}

template <typename scalar_t>
void backward_images(const Tensor& grad, const Tensor& values, const Tensor& valid, const Tensor& key,
                     const Tensor& labels, const Tensor& boxes, const Tensor& ranges, const Tensor& ids, double trim,
                     int64_t keep_rule, const Tensor& stats, const Tensor& counts, Tensor& grad_values) {
  using acc_t = acc_type<scalar_t>;
  const int64_t B = boxes.size(0), R = boxes.size(1), H = values.size(1), W = values.size(2);
  const auto in = inputs_of<scalar_t>(values, valid, key, labels);
  const int64_t* bx = data_of<const int64_t>(boxes);
  const double* rg = data_of<const double>(ranges);
  const int64_t* id = data_of<const int64_t>(ids);
  const acc_t* st = data_of<const acc_t>(stats);
  const int64_t* ct = data_of<const int64_t>(counts);
  const auto gv = StridedView4<const acc_t>{data_of<const acc_t>(grad), grad.stride(0), grad.stride(1), 0,
                                            grad.stride(2)};
  scalar_t* out = data_of<scalar_t>(grad_values);
  // A task is kChunkRows rows of one image (a batch pooled into one image spreads over the threads); each
  // pixel gathers its regions' gradients in region order.
  const int64_t chunks = (H + kChunkRows - 1) / kChunkRows;
  torch::stable::parallel_for(0, B * chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(kChunkRows * W);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / chunks, i0 = (task % chunks) * kChunkRows, i1 = std::min(H, i0 + kChunkRows);
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t r = 0; r < R; ++r) {
        const int64_t t = b * R + r;
        const acc_t* s = st + t * kNumStats;
        const int64_t* c = ct + t * kNumCounts;
        const int64_t n = c[kCount];
        if (n == 0) continue;
        const Region reg = region_of(bx, rg, id, t, H, W);
        const acc_t g_med = gv(b, r, 0, kMedian), g_mad = gv(b, r, 0, kMad), g_trim = gv(b, r, 0, kTrimmed);
        const acc_t inv_n = acc_t(1) / static_cast<acc_t>(n), med = s[kMedian], thr = s[kThreshold];
        const int64_t keep = kept_count(n, trim, keep_rule);
        for (int64_t i = std::max(reg.y0, i0); i < std::min(reg.y1, i1); ++i)
          for (int64_t j = reg.x0; j < reg.x1; ++j) {
            if (!member(in, reg, b, i, j)) continue;
            const acc_t v = value_at<acc_t>(in, b, i, j);
            acc[(i - i0) * W + j] += g_mad * sign_of(v - med) * inv_n +
                                     g_trim * trimmed_weight(v, thr, keep, c[kBelow], c[kEqual]);
          }
        const int64_t at = c[kMedianIndex] - i0 * W;
        if (c[kMedianIndex] >= 0 && at >= 0 && at < (i1 - i0) * W)
          acc[at] += g_med - g_mad * static_cast<acc_t>(c[kSignSum]) * inv_n;
      }
      scalar_t* dst = out + b * H * W + i0 * W;
      for (int64_t p = 0; p < (i1 - i0) * W; ++p) dst[p] = static_cast<scalar_t>(acc[p]);
    }
  });
}

std::tuple<Tensor, Tensor> forward_cpu(const Tensor& values, const Tensor& valid, const Tensor& key,
                                       const Tensor& labels, const Tensor& boxes, const Tensor& ranges,
                                       const Tensor& ids, double trim, int64_t keep_rule, bool with_median) {
  check_inputs(values, valid, key, labels, boxes, ranges, ids, trim, keep_rule);
  auto [stats, counts] = allocate_outputs(values, boxes);
  if (stats.numel() == 0) return {stats, counts};
  DM_DISPATCH_FLOATING_TYPES(values.scalar_type(), "order_statistics_cpu", [&] {
    forward_regions<scalar_t>(values, valid, key, labels, boxes, ranges, ids, trim, keep_rule, with_median, stats,
                              counts);
  });
  return {stats, counts};
}

Tensor backward_cpu(const Tensor& grad, const Tensor& values, const Tensor& valid, const Tensor& key,
                    const Tensor& labels, const Tensor& boxes, const Tensor& ranges, const Tensor& ids, double trim,
                    int64_t keep_rule, const Tensor& stats, const Tensor& counts) {
  check_backward(grad, values, valid, key, labels, boxes, ranges, ids, trim, keep_rule, stats, counts);
  auto grad_values = empty(values, {values.size(0), values.size(1), values.size(2)}, values.scalar_type());
  if (grad_values.numel() == 0) return grad_values;
  DM_DISPATCH_FLOATING_TYPES(values.scalar_type(), "order_statistics_backward_cpu", [&] {
    backward_images<scalar_t>(grad, values, valid, key, labels, boxes, ranges, ids, trim, keep_rule, stats, counts,
                              grad_values);
  });
  return grad_values;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(depthmetric, CPU, m) {
  m.impl("order_statistics", TORCH_BOX(&forward_cpu));
  m.impl("_order_statistics_backward", TORCH_BOX(&backward_cpu));
}

}  // namespace order_statistics
}  // namespace depthmetric
