// Host-side pieces shared by the CPU and CUDA entry points of depthmetric::order_statistics (inline: the CPU
// and the CUDA kernels are built into separate libraries).
#pragma once

#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <cmath>
#include <tuple>

#include "common/check.h"
#include "common/tensor_views.h"
#include "order_statistics/order_statistics_math.h"

namespace depthmetric {
namespace order_statistics {

using torch::stable::Tensor;

inline void check_inputs(const Tensor& values, const Tensor& valid, const Tensor& key, const Tensor& labels,
                         const Tensor& boxes, const Tensor& ranges, const Tensor& ids, double trim,
                         int64_t keep_rule) {
  check_floating(values, "values");
  check_dim(values, 3, "values (B,H,W)");
  const int64_t B = values.size(0), H = values.size(1), W = values.size(2);
  check_shape(valid, {B, H, W}, "valid", "the values' B,H,W");
  check_dtype(valid, ScalarType::Bool, "valid");
  check_shape(key, {B, H, W}, "key", "the values' B,H,W");
  check_dtype(key, values.scalar_type(), "key (the values' dtype)");
  check_shape(labels, {B, H, W}, "labels", "the values' B,H,W");
  check_dtype(labels, ScalarType::Long, "labels");
  check_dim(boxes, 3, "boxes (B,R,4)");
  const int64_t R = boxes.size(1);
  check_shape(boxes, {B, R, 4}, "boxes", "B,R,4 with the values' B");
  check_dtype(boxes, ScalarType::Long, "boxes");
  check_shape(ranges, {B, R, 2}, "ranges", "B,R,2 with the boxes' B,R");
  check_dtype(ranges, ScalarType::Double, "ranges");
  check_shape(ids, {B, R}, "ids", "B,R with the boxes' B,R");
  check_dtype(ids, ScalarType::Long, "ids");
  DM_CHECK(boxes.is_contiguous() && ranges.is_contiguous() && ids.is_contiguous(),
           "boxes, ranges and ids must be contiguous");
  check_same_device(values, valid, "values", "valid");
  check_same_device(values, key, "values", "key");
  check_same_device(values, labels, "values", "labels");
  check_same_device(values, boxes, "values", "boxes");
  check_same_device(values, ranges, "values", "ranges");
  check_same_device(values, ids, "values", "ids");
  DM_CHECK(std::isfinite(trim) && trim >= 0 && trim <= 1, "trim must be a number in [0, 1], got ", trim);
  DM_CHECK(keep_rule == 0 || keep_rule == 1, "keep_rule must be 0 (drop floor(trim n)) or 1 (keep floor((1 - trim) n)), got ",
           keep_rule);
}

inline void check_backward(const Tensor& grad, const Tensor& values, const Tensor& valid, const Tensor& key,
                           const Tensor& labels, const Tensor& boxes, const Tensor& ranges, const Tensor& ids,
                           double trim, int64_t keep_rule, const Tensor& stats, const Tensor& counts) {
  check_inputs(values, valid, key, labels, boxes, ranges, ids, trim, keep_rule);
  const int64_t B = boxes.size(0), R = boxes.size(1);
  const ScalarType acc = accumulate_dtype(values.scalar_type());
  check_shape(grad, {B, R, kNumStats}, "grad", "B,R,4");
  check_dtype(grad, acc, "grad (the accumulation dtype)");
  check_shape(stats, {B, R, kNumStats}, "stats", "B,R,4");
  check_dtype(stats, acc, "stats (the accumulation dtype)");
  check_shape(counts, {B, R, kNumCounts}, "counts", "B,R,5");
  check_dtype(counts, ScalarType::Long, "counts");
  DM_CHECK(stats.is_contiguous() && counts.is_contiguous(), "stats and counts must be contiguous");
  check_same_device(values, grad, "values", "grad");
  check_same_device(values, stats, "values", "stats");
  check_same_device(values, counts, "values", "counts");
}

// A 3-d B,H,W tensor as a 4-d view with a unit channel.
template <typename T, typename index_t = int64_t>
StridedView4<T, index_t> view3(const Tensor& t) {
  return {data_of<T>(t), static_cast<index_t>(t.stride(0)), index_t(0), static_cast<index_t>(t.stride(1)),
          static_cast<index_t>(t.stride(2))};
}

template <typename scalar_t, typename index_t = int64_t>
Inputs<scalar_t, index_t> inputs_of(const Tensor& values, const Tensor& valid, const Tensor& key,
                                    const Tensor& labels) {
  return {view3<const scalar_t, index_t>(values), view3<const scalar_t, index_t>(key),
          view3<const bool, index_t>(valid), view3<const int64_t, index_t>(labels)};
}

inline std::tuple<Tensor, Tensor> allocate_outputs(const Tensor& values, const Tensor& boxes) {
  const int64_t B = boxes.size(0), R = boxes.size(1);
  return {empty(values, {B, R, kNumStats}, accumulate_dtype(values.scalar_type())),
          empty(values, {B, R, kNumCounts}, ScalarType::Long)};
}

}  // namespace order_statistics
}  // namespace depthmetric
