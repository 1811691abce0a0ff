// Block sizes of the CPU kernels of depthmetric::min_reprojection (tests read these lines to pick sizes that
// cross them).
#pragma once

#include <cstdint>

namespace depthmetric {
namespace min_reprojection {

inline constexpr int64_t kBackwardRowBlock = 32;  // H: input rows per backward task (selection weights once per task)

}  // namespace min_reprojection
}  // namespace depthmetric
