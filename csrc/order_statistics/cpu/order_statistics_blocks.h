// Block sizes of the CPU kernel of depthmetric::order_statistics (tests read these lines to pick sizes that
// cross them).
#pragma once

#include <cstdint>

namespace depthmetric {
namespace order_statistics {

inline constexpr int64_t kChunkRows = 16;  // H: region rows per chunk of the forward's passes (partial sums in chunk order)

}  // namespace order_statistics
}  // namespace depthmetric
