#include "weft/spi/cntr.hpp"

#include <poll.h>

#include <algorithm>
#include <ctime>

#include "util/clock.hpp"

namespace weft::spi {

std::uint64_t cntr::read() noexcept {
  progress();
  return value_.load(std::memory_order_acquire);
}

std::uint64_t cntr::read_err() noexcept {
  progress();
  const std::uint64_t e = errors_.load(std::memory_order_acquire);
  seen_err_.store(e, std::memory_order_release);
  return e;
}

errc cntr::wait(std::uint64_t threshold, int timeout_ms) noexcept {
  const std::uint64_t start = util::now_ns();
  const std::uint64_t deadline =
      timeout_ms < 0 ? ~0ull : start + static_cast<std::uint64_t>(timeout_ms) * 1000000ull;
  for (std::uint64_t spins = 0;; ++spins) {
    progress();
    if (value_.load(std::memory_order_acquire) >= threshold) return errc::ok;
    if (errors_.load(std::memory_order_acquire) != seen_err_.load(std::memory_order_acquire))
      return errc::error_available;
    const std::uint64_t now = util::now_ns();
    if (now >= deadline) return errc::timed_out;
    if (now - start > 50'000) sleep_slice(1);  // spin briefly, then sleep in short slices
  }
}

}  // namespace weft::spi
