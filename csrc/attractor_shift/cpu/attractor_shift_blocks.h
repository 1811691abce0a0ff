// Block sizes of the CPU kernels of depthmetric::attractor_shift (tests read these lines to pick sizes that
// cross them).
#pragma once

#include <cstdint>

namespace depthmetric {
namespace attractor_shift {

inline constexpr int64_t kColumnBlock = 64;  // w: columns per task (A attractor rows of it stay in L1)

}  // namespace attractor_shift
}  // namespace depthmetric
