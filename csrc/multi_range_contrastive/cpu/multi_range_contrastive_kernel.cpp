// CPU kernels of depthmetric::multi_range_contrastive. Work is split over bands of image rows (row_bands);
// within a band the loops run channel by channel, and over contiguous runs of pixels within a row.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <tuple>
#include <type_traits>
#include <vector>

#include "common/tensor_views.h"
#include "multi_range_contrastive/cpu/multi_range_contrastive_blocks.h"
#include "multi_range_contrastive/multi_range_contrastive.h"
#include "multi_range_contrastive/pair_math.h"

namespace depthmetric {
namespace multi_range_contrastive {
namespace {

struct Shift {
  int64_t b, h, w;
};

// Calls run(w0, w1, delta) for the two runs of [0, W) over which a rolled column index is w + delta:
// roll_back(w, shift, W) (forward = false) or roll_forward (forward = true). Within a run the rolled
// reads are contiguous, so the inner loops vectorise instead of selecting an index per element.
template <typename Run>
void for_roll_runs(int64_t shift, int64_t W, bool forward, Run&& run) {
  if (forward) {
    run(int64_t{0}, W - shift, shift);
    run(W - shift, W, shift - W);
  } else {
    run(int64_t{0}, shift, W - shift);
    run(shift, W, -shift);
  }
}

// Calls body(std::true_type) when the feature rows are contiguous (NCHW), so that the kernels' loops see a
// unit stride at compile time and vectorise, else body(std::false_type).
template <typename Body>
void with_unit_stride(const Tensor& features, Body&& body) {
  if (features.stride(3) == 1) {
    body(std::true_type{});
  } else {
    body(std::false_type{});
  }
}

// Row bands: a task takes a band of rows of one image and runs channel by channel over all its rows, so that
// a channel's plane, which the band's shifted rows read over and over, stays in L2 (2 MiB per core here)
// while the band's per-row buffers (bytes_per_row each) take about half of it. Row by row, every channel of
// every shifted row came from L3 again: 15 (forward) and 29 (backward) reads per feature value. The band
// depends on the sizes only, never on the thread count.
struct Bands {
  int64_t rows, per_image;
};

Bands row_bands(int64_t H, int64_t bytes_per_row) {
  constexpr int64_t kBufferBytes = int64_t{1} << 20;
  const int64_t rows = std::max<int64_t>(1, std::min<int64_t>(H, kBufferBytes / std::max<int64_t>(bytes_per_row, 1)));
  return {rows, H == 0 ? 0 : (H + rows - 1) / rows};
}

// The shifts brought into [0, B), [0, H), [0, W).
std::vector<Shift> host_shifts(const Tensor& features, const Tensor& shifts_in) {
  const auto shifts = torch::stable::contiguous(shifts_in);
  const int64_t B = features.size(0), H = features.size(2), W = features.size(3);
  std::vector<Shift> out(shifts.size(0), Shift{0, 0, 0});
  if (B * H * W == 0) return out;  // no pixel to pair (and a shift modulo 0 would trap)
  const int64_t* s = data_of<const int64_t>(shifts);
  for (size_t n = 0; n < out.size(); ++n) {
    out[n] = {reduce_shift(s[3 * n], B), reduce_shift(s[3 * n + 1], H), reduce_shift(s[3 * n + 2], W)};
  }
  return out;
}

// The codes of n pairs of contiguous depths. The rule by value: a reference could alias the stores, which
// keeps GCC from vectorising.
template <typename acc_t>
void classify_run(const Rule<acc_t> rule, const acc_t* __restrict__ anchor, const acc_t* __restrict__ sample,
                  int64_t n, acc_t* __restrict__ code) {
  for (int64_t w = 0; w < n; ++w) code[w] = rule.classify(anchor[w], sample[w]);
}

// One shift's pairs of an anchor row: their terms added to the row's loss and count, their coefficients
// stored (an ignored pair's term is 0: its code is below any distance).
template <typename acc_t>
void pair_terms_row(const acc_t* __restrict__ code, const acc_t* __restrict__ dist_sq, int64_t W,
                    acc_t* __restrict__ loss, int32_t* __restrict__ count, acc_t* __restrict__ coef) {
  for (int64_t w = 0; w < W; ++w) {
    const PairTerm<acc_t> term = pair_term(code[w], dist_sq[w]);
    loss[w] += term.loss;
    count[w] += is_counted(code[w]);
    coef[w] = term.coef;
  }
}

// Channels go in blocks of kChannelBlock (the rest one by one): a pair's squared distance (forward) and an
// image row's pair weights (backward) are read once per block instead of once per channel, and each sum
// still adds its channels in order, so the results are those of a channel-by-channel loop.

template <typename Body>
void with_channel_block(int64_t channels_left, Body&& body) {
  if (channels_left >= kChannelBlock) {
    body(std::integral_constant<int, kChannelBlock>{});
  } else {
    body(std::integral_constant<int, 1>{});
  }
}

// acc[w] += sum over the K channels (c_stride apart) of (anchor - sample)^2 at w, channels in order.
template <int K, bool kUnitStride, typename scalar_t, typename acc_t>
void add_dist_sq_run(const scalar_t* __restrict__ anchor, const scalar_t* __restrict__ sample, int64_t c_stride,
                     int64_t s3_in, int64_t n, acc_t* __restrict__ acc) {
  const int64_t s3 = kUnitStride ? 1 : s3_in;
  for (int64_t w = 0; w < n; ++w) {
    acc_t sum = acc[w];
    for (int j = 0; j < K; ++j) {
      const acc_t diff = static_cast<acc_t>(anchor[j * c_stride + w * s3]) - static_cast<acc_t>(sample[j * c_stride + w * s3]);
      sum += diff * diff;
    }
    acc[w] = sum;
  }
}

// acc[j][w] -= weight[w] * src[j][w] for the K channels (rows acc_stride apart in acc, c_stride in src).
template <int K, bool kUnitStride, typename scalar_t, typename acc_t>
void sub_weighted_run(const acc_t* __restrict__ weight, const scalar_t* __restrict__ src, int64_t c_stride,
                      int64_t s3_in, int64_t n, acc_t* __restrict__ acc, int64_t acc_stride) {
  const int64_t s3 = kUnitStride ? 1 : s3_in;
  for (int64_t w = 0; w < n; ++w) {
    const acc_t weight_w = weight[w];
    for (int j = 0; j < K; ++j) acc[j * acc_stride + w] -= weight_w * static_cast<acc_t>(src[j * c_stride + w * s3]);
  }
}

template <typename scalar_t, bool kUnitStride>
void forward_rows(const Tensor& features, const Tensor& depth, const std::vector<Shift>& shifts,
                  const Rule<acc_type<scalar_t>>& rule, const Anchors& anchors, ForwardOutputs& out) {
  using acc_t = acc_type<scalar_t>;
  const auto f = strided_view4<const scalar_t>(features);
  const int64_t s3 = kUnitStride ? 1 : f.s3;
  const int64_t B = features.size(0), C = features.size(1), H = features.size(2), W = features.size(3);
  const int64_t N = static_cast<int64_t>(shifts.size()), total = anchors.count * H * W;
  const acc_t* d = data_of<const acc_t>(depth);
  acc_t* loss = data_of<acc_t>(out.loss);
  int32_t* count = data_of<int32_t>(out.count);
  acc_t* coef = data_of<acc_t>(out.coef);

  // A task: a band of anchor rows of anchor image a (image b = anchors.start + a of the B); outputs by row.
  const Bands bands = row_bands(H, 2 * N * W * static_cast<int64_t>(sizeof(acc_t)));
  torch::stable::parallel_for(0, anchors.count * bands.per_image, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> code(bands.rows * N * W);
    std::vector<acc_t> dist_sq(bands.rows * N * W);
    std::vector<int64_t> src_b(N), src_h(bands.rows * N);
    std::vector<char> active(bands.rows * N);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t a = task / bands.per_image, b = anchors.start + a;
      const int64_t h0 = task % bands.per_image * bands.rows, h1 = std::min(H, h0 + bands.rows);
      for (int64_t n = 0; n < N; ++n) src_b[n] = roll_back(b, shifts[n].b, B);
      for (int64_t h = h0; h < h1; ++h) {
        for (int64_t n = 0; n < N; ++n) {
          const int64_t k = (h - h0) * N + n;
          src_h[k] = roll_back(h, shifts[n].h, H);
          const acc_t* anchor_depth = d + (b * H + h) * W;
          const acc_t* sample_depth = d + (src_b[n] * H + src_h[k]) * W;
          acc_t* pairs = &code[k * W];
          for_roll_runs(shifts[n].w, W, false, [&](int64_t w0, int64_t w1, int64_t delta) {
            classify_run(rule, anchor_depth + w0, sample_depth + w0 + delta, w1 - w0, pairs + w0);
          });
          active[k] = 0;
          for (int64_t w = 0; w < W; ++w) active[k] |= is_counted(pairs[w]);
          std::fill(&dist_sq[k * W], &dist_sq[k * W] + W, acc_t(0));
        }
      }
      for (int64_t c = 0; c < C;) {
        with_channel_block(C - c, [&](auto block) {
          constexpr int K = decltype(block)::value;
          for (int64_t h = h0; h < h1; ++h) {
            const scalar_t* anchor = &f.data[f.offset(b, c, h, 0)];
            for (int64_t n = 0; n < N; ++n) {
              const int64_t k = (h - h0) * N + n;
              if (!active[k]) continue;
              const scalar_t* sample = &f.data[f.offset(src_b[n], c, src_h[k], 0)];
              acc_t* acc = &dist_sq[k * W];
              for_roll_runs(shifts[n].w, W, false, [&](int64_t w0, int64_t w1, int64_t delta) {
                add_dist_sq_run<K, kUnitStride>(anchor + w0 * s3, sample + (w0 + delta) * s3, f.s1, s3, w1 - w0,
                                                acc + w0);
              });
            }
          }
          c += K;
        });
      }
      // Shift by shift over contiguous rows (the per-pixel sums keep their order over n): vectorised.
      for (int64_t h = h0; h < h1; ++h) {
        const int64_t row = a * H + h;
        acc_t* loss_row = loss + row * W;
        int32_t* count_row = count + row * W;
        std::fill(loss_row, loss_row + W, acc_t(0));
        std::fill(count_row, count_row + W, 0);
        for (int64_t n = 0; n < N; ++n) {
          const int64_t k = (h - h0) * N + n;
          pair_terms_row(&code[k * W], &dist_sq[k * W], W, loss_row, count_row, coef + n * total + row * W);
        }
      }
    }
  });
}

// The gradient at pixel x gathers its pairs as anchor (x, x - s) and as sample (x + s, x), so each output
// element is written once by one thread: deterministic, no atomics. x is an anchor only in the anchor images,
// and x + s only counts when it is one; the weights of the other pairs are 0.
template <typename scalar_t, bool kUnitStride>
void backward_rows(const Tensor& grad_loss, const Tensor& features, const std::vector<Shift>& shifts,
                   const Tensor& coef_t, const Anchors& anchors, Tensor& grad) {
  using acc_t = acc_type<scalar_t>;
  const auto f = strided_view4<const scalar_t>(features);
  const int64_t s3 = kUnitStride ? 1 : f.s3;
  const auto g_out = strided_view4<scalar_t>(grad);
  const int64_t B = features.size(0), C = features.size(1), H = features.size(2), W = features.size(3);
  const int64_t N = static_cast<int64_t>(shifts.size()), total = anchors.count * H * W;
  const acc_t* g = data_of<const acc_t>(grad_loss);
  const acc_t* coef = data_of<const acc_t>(coef_t);
  const auto anchor_row = [&](int64_t b, int64_t h) {  // the row of (b, h) in grad_loss and coef, or -1
    const int64_t a = b - anchors.start;
    return a >= 0 && a < anchors.count ? a * H + h : int64_t{-1};
  };

  // A task: a band of rows of image b; the pair weights of its rows first, then channel by channel.
  const Bands bands = row_bands(H, (2 * N + 1) * W * static_cast<int64_t>(sizeof(acc_t)));
  torch::stable::parallel_for(0, B * bands.per_image, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> w_anchor(bands.rows * N * W), w_sample(bands.rows * N * W), w_sum(bands.rows * W), acc(kChannelBlock * W);
    std::vector<int64_t> b_q(N), h_q(bands.rows * N), b_p(N), h_p(bands.rows * N);
    std::vector<char> active(bands.rows * N);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / bands.per_image;
      const int64_t h0 = task % bands.per_image * bands.rows, h1 = std::min(H, h0 + bands.rows);
      for (int64_t n = 0; n < N; ++n) {
        b_q[n] = roll_back(b, shifts[n].b, B);
        b_p[n] = roll_forward(b, shifts[n].b, B);
      }
      for (int64_t h = h0; h < h1; ++h) {
        const int64_t x_row = anchor_row(b, h);
        acc_t* ws = &w_sum[(h - h0) * W];
        std::fill(ws, ws + W, acc_t(0));
        for (int64_t n = 0; n < N; ++n) {
          const int64_t k = (h - h0) * N + n;
          h_q[k] = roll_back(h, shifts[n].h, H);
          h_p[k] = roll_forward(h, shifts[n].h, H);
          const int64_t p_row = anchor_row(b_p[n], h_p[k]);
          acc_t* wa = &w_anchor[k * W];
          acc_t* wb = &w_sample[k * W];
          if (x_row >= 0) {
            const acc_t* g_x = g + x_row * W;
            const acc_t* c_x = coef + n * total + x_row * W;
            for (int64_t w = 0; w < W; ++w) wa[w] = g_x[w] * c_x[w];
          } else {
            std::fill(wa, wa + W, acc_t(0));
          }
          if (p_row >= 0) {
            const acc_t* g_p = g + p_row * W;
            const acc_t* c_p = coef + n * total + p_row * W;
            for_roll_runs(shifts[n].w, W, true, [&](int64_t w0, int64_t w1, int64_t delta) {
              for (int64_t w = w0; w < w1; ++w) wb[w] = g_p[w + delta] * c_p[w + delta];
            });
          } else {
            std::fill(wb, wb + W, acc_t(0));
          }
          bool any = false;
          for (int64_t w = 0; w < W; ++w) {
            ws[w] += wa[w] + wb[w];
            any |= (wa[w] != acc_t(0)) | (wb[w] != acc_t(0));
          }
          active[k] = any;
        }
      }
      for (int64_t c = 0; c < C;) {
        with_channel_block(C - c, [&](auto block) {
          constexpr int K = decltype(block)::value;
          for (int64_t h = h0; h < h1; ++h) {
            const acc_t* ws = &w_sum[(h - h0) * W];
            for (int j = 0; j < K; ++j) {
              const scalar_t* self = &f.data[f.offset(b, c + j, h, 0)];
              for (int64_t w = 0; w < W; ++w) acc[j * W + w] = ws[w] * static_cast<acc_t>(self[w * s3]);
            }
            for (int64_t n = 0; n < N; ++n) {
              const int64_t k = (h - h0) * N + n;
              if (!active[k]) continue;
              // As anchor, x pairs with its sample q = x - s; as sample, with the anchor p = x + s.
              const scalar_t* q = &f.data[f.offset(b_q[n], c, h_q[k], 0)];
              const scalar_t* p = &f.data[f.offset(b_p[n], c, h_p[k], 0)];
              const acc_t* wa = &w_anchor[k * W];
              const acc_t* wb = &w_sample[k * W];
              for_roll_runs(shifts[n].w, W, false, [&](int64_t w0, int64_t w1, int64_t delta) {
                sub_weighted_run<K, kUnitStride>(wa + w0, q + (w0 + delta) * s3, f.s1, s3, w1 - w0, acc.data() + w0, W);
              });
              for_roll_runs(shifts[n].w, W, true, [&](int64_t w0, int64_t w1, int64_t delta) {
                sub_weighted_run<K, kUnitStride>(wb + w0, p + (w0 + delta) * s3, f.s1, s3, w1 - w0, acc.data() + w0, W);
              });
            }
            for (int j = 0; j < K; ++j) {
              for (int64_t w = 0; w < W; ++w) g_out(b, c + j, h, w) = static_cast<scalar_t>(acc[j * W + w]);
            }
          }
          c += K;
        });
      }
    }
  });
}

std::tuple<Tensor, Tensor, Tensor> forward_cpu(const Tensor& features, const Tensor& depth_in, const Tensor& shifts,
                                               double r_p, const std::vector<double>& range_lo,
                                               const std::vector<double>& range_hi,
                                               const std::vector<double>& margins, int64_t anchor_start,
                                               std::optional<int64_t> anchor_count) {
  const auto anchors = check_forward(features, depth_in, shifts, anchor_start, anchor_count);
  const auto host = host_shifts(features, shifts);
  const auto depth = torch::stable::contiguous(depth_in);
  auto out = allocate_forward(features, static_cast<int64_t>(host.size()), anchors);
  DM_DISPATCH_FLOATING_TYPES(features.scalar_type(), "multi_range_contrastive_cpu", [&] {
    const auto rule = make_rule<acc_type<scalar_t>>(r_p, range_lo, range_hi, margins);
    with_unit_stride(features, [&](auto unit) {
      forward_rows<scalar_t, decltype(unit)::value>(features, depth, host, rule, anchors, out);
    });
  });
  return {out.loss, out.count, out.coef};
}

Tensor backward_cpu(const Tensor& grad_loss, const Tensor& features, const Tensor& shifts, const Tensor& coef,
                    int64_t anchor_start) {
  const auto anchors = check_backward(grad_loss, features, shifts, coef, anchor_start);
  const auto host = host_shifts(features, shifts);
  auto grad = torch::stable::empty_like(features);
  DM_DISPATCH_FLOATING_TYPES(features.scalar_type(), "multi_range_contrastive_backward_cpu", [&] {
    with_unit_stride(features, [&](auto unit) {
      backward_rows<scalar_t, decltype(unit)::value>(torch::stable::contiguous(grad_loss), features, host,
                                                     torch::stable::contiguous(coef), anchors, grad);
    });
  });
  return grad;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(depthmetric, CPU, m) {
  m.impl("multi_range_contrastive", TORCH_BOX(&forward_cpu));
  m.impl("_multi_range_contrastive_backward", TORCH_BOX(&backward_cpu));
}

}  // namespace multi_range_contrastive
}  // namespace depthmetric
