// CPU kernels of depthmetric::attractor_shift. A task is one row segment of kColumnBlock pixels of one image:
// the A attractor rows of it are converted to acc_t once, then per bin centre k the shifts of all attractors
// are summed over contiguous row buffers (the loops over the segment vectorise), so nothing of size
// B x A x K x h x w exists. The backward recomputes f' the same way and gathers both gradients in the one
// pass: grad_c per k directly, grad_a summed over k in A row accumulators; every output element is written
// by one task in a fixed order (deterministic at any thread count, no atomics).
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "attractor_shift/attractor_shift.h"
#include "attractor_shift/attractor_shift_math.h"
#include "attractor_shift/cpu/attractor_shift_blocks.h"
#include "common/tensor_views.h"

namespace depthmetric {
namespace attractor_shift {
namespace {

// n entries of row (b, c, i) from column j0, converted to acc_t.
template <typename acc_t, typename scalar_t>
void load_row(const StridedView4<const scalar_t>& v, int64_t b, int64_t c, int64_t i, int64_t j0, int64_t n,
              acc_t* __restrict__ dst) {
  const scalar_t* src = &v(b, c, i, j0);
  if (v.s3 == 1) {
    for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<acc_t>(src[j]);
  } else {
    for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<acc_t>(src[j * v.s3]);
  }
}

// sum[j] = sum_a f(a[a][j] - c[j]) over the A attractor rows (kColumnBlock apart), in attractor order.
template <int64_t K, int G, typename acc_t>
__attribute__((noinline)) void shift_sums(int64_t n, int64_t A, const acc_t* __restrict__ a,
                                          const acc_t* __restrict__ c, acc_t alpha, int64_t gamma,
                                          acc_t* __restrict__ sum) {
  for (int64_t j = 0; j < n; ++j) sum[j] = acc_t(0);
  for (int64_t t = 0; t < A; ++t) {
    const acc_t* __restrict__ at = a + t * kColumnBlock;
    for (int64_t j = 0; j < n; ++j) sum[j] += shift<K, G>(at[j] - c[j], alpha, gamma);
  }
}

// For one centre row: fsum[j] = sum_a f'(a - c) and ga[a][j] += g[j] f'(a - c).
template <int64_t K, int G, typename acc_t>
__attribute__((noinline)) void slope_sums(int64_t n, int64_t A, const acc_t* __restrict__ a,
                                          const acc_t* __restrict__ c, const acc_t* __restrict__ g, acc_t alpha,
                                          acc_t ag, int64_t gamma, acc_t* __restrict__ fsum, acc_t* __restrict__ ga) {
  for (int64_t j = 0; j < n; ++j) fsum[j] = acc_t(0);
  for (int64_t t = 0; t < A; ++t) {
    const acc_t* __restrict__ at = a + t * kColumnBlock;
    acc_t* __restrict__ gt = ga + t * kColumnBlock;
    for (int64_t j = 0; j < n; ++j) {
      const acc_t fp = slope<K, G>(at[j] - c[j], alpha, ag, gamma);
      fsum[j] += fp;
      gt[j] += g[j] * fp;
    }
  }
}

struct Task {
  int64_t b, i, j0, n;
};

inline Task task_of(int64_t t, int64_t H, int64_t W) {
  const int64_t blocks = (W + kColumnBlock - 1) / kColumnBlock;
  const int64_t j0 = (t % blocks) * kColumnBlock;
  return {t / (blocks * H), (t / blocks) % H, j0, std::min(kColumnBlock, W - j0)};
}

template <typename scalar_t, int64_t K, int G>
void forward_rows(const Tensor& centers, const Tensor& attractors, double alpha_d, int64_t gamma, bool mean,
                  Tensor& out) {
  using acc_t = acc_type<scalar_t>;
  const int64_t B = centers.size(0), NK = centers.size(1), H = centers.size(2), W = centers.size(3);
  const int64_t A = attractors.size(1), blocks = (W + kColumnBlock - 1) / kColumnBlock;
  const auto cv = strided_view4<const scalar_t>(centers);
  const auto av = strided_view4<const scalar_t>(attractors);
  const acc_t alpha = static_cast<acc_t>(alpha_d), n_attractors = static_cast<acc_t>(A);
  acc_t* o = data_of<acc_t>(out);
  torch::stable::parallel_for(0, B * H * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> abuf(A * kColumnBlock), cbuf(kColumnBlock), sum(kColumnBlock);
    for (int64_t t = begin; t < end; ++t) {
      const auto [b, i, j0, n] = task_of(t, H, W);
      for (int64_t a = 0; a < A; ++a) load_row(av, b, a, i, j0, n, &abuf[a * kColumnBlock]);
      for (int64_t k = 0; k < NK; ++k) {
        load_row(cv, b, k, i, j0, n, cbuf.data());
        shift_sums<K, G>(n, A, abuf.data(), cbuf.data(), alpha, gamma, sum.data());
        acc_t* dst = o + ((b * NK + k) * H + i) * W + j0;
        if (mean) {
          for (int64_t j = 0; j < n; ++j) dst[j] = cbuf[j] + sum[j] / n_attractors;
        } else {
          for (int64_t j = 0; j < n; ++j) dst[j] = cbuf[j] + sum[j];
        }
      }
    }
  });
}

template <typename scalar_t, int64_t K, int G>
void backward_rows(const Tensor& grad, const Tensor& centers, const Tensor& attractors, double alpha_d,
                   int64_t gamma, bool mean, Tensor& grad_c, Tensor& grad_a) {
  using acc_t = acc_type<scalar_t>;
  const int64_t B = centers.size(0), NK = centers.size(1), H = centers.size(2), W = centers.size(3);
  const int64_t A = attractors.size(1), blocks = (W + kColumnBlock - 1) / kColumnBlock;
  const auto cv = strided_view4<const scalar_t>(centers);
  const auto av = strided_view4<const scalar_t>(attractors);
  // The incoming gradient is read through its strides (from a mean it is an expanded scalar).
  const auto gv = strided_view4<const acc_t>(grad);
  const acc_t alpha = static_cast<acc_t>(alpha_d);
  const acc_t ag = alpha * static_cast<acc_t>(gamma);
  const acc_t s = mean ? acc_t(1) / static_cast<acc_t>(A) : acc_t(1);
  scalar_t* gc = data_of<scalar_t>(grad_c);
  scalar_t* ga = data_of<scalar_t>(grad_a);
  torch::stable::parallel_for(0, B * H * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> abuf(A * kColumnBlock), gacc(A * kColumnBlock), cbuf(kColumnBlock), gbuf(kColumnBlock),
        fsum(kColumnBlock);
    for (int64_t t = begin; t < end; ++t) {
      const auto [b, i, j0, n] = task_of(t, H, W);
      for (int64_t a = 0; a < A; ++a) load_row(av, b, a, i, j0, n, &abuf[a * kColumnBlock]);
      std::fill(gacc.begin(), gacc.end(), acc_t(0));
      for (int64_t k = 0; k < NK; ++k) {
        load_row(cv, b, k, i, j0, n, cbuf.data());
        load_row(gv, b, k, i, j0, n, gbuf.data());
        slope_sums<K, G>(n, A, abuf.data(), cbuf.data(), gbuf.data(), alpha, ag, gamma, fsum.data(), gacc.data());
        scalar_t* dst = gc + ((b * NK + k) * H + i) * W + j0;
        for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<scalar_t>(gbuf[j] * (acc_t(1) - s * fsum[j]));
      }
      for (int64_t a = 0; a < A; ++a) {
        scalar_t* dst = ga + ((b * A + a) * H + i) * W + j0;
        const acc_t* src = &gacc[a * kColumnBlock];
        for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<scalar_t>(s * src[j]);
      }
    }
  });
}

Tensor forward_cpu(const Tensor& centers, const Tensor& attractors, double alpha, int64_t gamma, int64_t kind,
                   bool mean) {
  check_inputs(centers, attractors, alpha, gamma, kind, mean);
  auto out = allocate_output(centers);
  if (out.numel() == 0) return out;
  DM_DISPATCH_FLOATING_TYPES(centers.scalar_type(), "attractor_shift_cpu", [&] {
    with_attractor(kind, gamma, [&](auto k, auto g) {
      forward_rows<scalar_t, decltype(k)::value, decltype(g)::value>(centers, attractors, alpha, gamma, mean, out);
    });
  });
  return out;
}

std::tuple<Tensor, Tensor> backward_cpu(const Tensor& grad, const Tensor& centers, const Tensor& attractors,
                                        double alpha, int64_t gamma, int64_t kind, bool mean) {
  check_backward(grad, centers, attractors, alpha, gamma, kind, mean);
  auto [grad_c, grad_a] = allocate_gradients(centers, attractors);
  if (centers.numel() == 0) return {grad_c, torch::stable::fill_(grad_a, 0.0)};  // no centre: no shift to pull
  DM_DISPATCH_FLOATING_TYPES(centers.scalar_type(), "attractor_shift_backward_cpu", [&] {
    with_attractor(kind, gamma, [&](auto k, auto g) {
      backward_rows<scalar_t, decltype(k)::value, decltype(g)::value>(grad, centers, attractors, alpha, gamma, mean,
                                                                      grad_c, grad_a);
    });
  });
  return {grad_c, grad_a};
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(depthmetric, CPU, m) {
  m.impl("attractor_shift", TORCH_BOX(&forward_cpu));
  m.impl("_attractor_shift_backward", TORCH_BOX(&backward_cpu));
}

}  // namespace attractor_shift
}  // namespace depthmetric
