// Block sizes of the CPU kernel of depthmetric::depth_metric_sums (tests read these lines to pick sizes that
// cross them).
#pragma once

#include <cstdint>

namespace depthmetric {
namespace depth_metric_sums {

inline constexpr int64_t kLanes = 4;  // W: interleaved partial sums of a row (pixel j adds into lane j % kLanes)
inline constexpr int64_t kChunk = 256;  // W: counted pixels of a row per pass of the addends (a multiple of kLanes)

}  // namespace depth_metric_sums
}  // namespace depthmetric
