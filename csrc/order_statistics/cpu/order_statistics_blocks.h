// Block sizes of the CPU kernel of depthmetric::order_statistics (tests read these lines to pick sizes that
// cross them).
#pragma once

#include <cstdint>

namespace depthmetric {
namespace order_statistics {

inline constexpr int64_t kChunkRows = 16;  // H: region rows per chunk of the forward's passes (partial sums in chunk order)
inline constexpr int64_t kLanes = 4;  // members of a chunk: interleaved partial sums (member k adds into lane k % kLanes)

}  // namespace order_statistics
}  // namespace depthmetric
