// Block sizes of the CPU kernels of depthmetric::multi_range_contrastive (tests read these lines to pick
// sizes that cross them). The row bands depend on the sizes (row_bands), so they have no constant here.
#pragma once

#include <cstdint>

namespace depthmetric {
namespace multi_range_contrastive {

inline constexpr int64_t kChannelBlock = 4;  // C: channels per pass of the distance and gradient sums

}  // namespace multi_range_contrastive
}  // namespace depthmetric
