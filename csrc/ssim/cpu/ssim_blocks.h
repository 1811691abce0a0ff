// Block sizes of the CPU kernels of depthmetric::ssim (tests read these lines to pick sizes that cross them).
#pragma once

#include <cstdint>

namespace depthmetric {
namespace ssim {

inline constexpr int64_t kBackwardRowBlock = 64;  // H: input rows per backward task (its ring refills 2r rows)

}  // namespace ssim
}  // namespace depthmetric
