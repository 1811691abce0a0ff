// Block sizes of the CPU kernel of depthmetric::log_binomial_expectation (tests read these lines to pick sizes that cross
// them).
#pragma once

#include <cstdint>

namespace depthmetric {
namespace log_binomial_expectation {

inline constexpr int64_t kCentreRowBlock = 8;  // h: source rows of the centres per backward task (common/bin_softmax_cpu.h)

}  // namespace log_binomial_expectation
}  // namespace depthmetric
