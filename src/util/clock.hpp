#pragma once
#include <time.h>

#include <cstdint>

namespace weft::util {

// Monotonic nanoseconds (vDSO: no syscall).
[[nodiscard]] inline std::uint64_t now_ns() noexcept {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<std::uint64_t>(ts.tv_nsec);
}

}  // namespace weft::util

namespace weft::util {

// Monotonic nanoseconds at the kernel tick's resolution (a few ms): a few
// loads from the vDSO page, for schedules of tens of milliseconds.
[[nodiscard]] inline std::uint64_t coarse_now_ns() noexcept {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<std::uint64_t>(ts.tv_nsec);
}

}  // namespace weft::util
