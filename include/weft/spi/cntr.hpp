#pragma once
// Completion counter (cf. fi_cntr(3)): counts completed operations of the
// kinds it is bound for, and failed ones separately. Atomic, so a provider's
// progress thread may update it while the application reads it.
#include <atomic>
#include <cstdint>
#include <vector>

#include "weft/spi/progress.hpp"
#include "weft/types.hpp"

namespace weft::spi {

class cntr : public progress_group {
 public:
  void inc() noexcept { value_.fetch_add(1, std::memory_order_release); }
  void inc_err() noexcept { errors_.fetch_add(1, std::memory_order_release); }

  [[nodiscard]] std::uint64_t read() noexcept;
  [[nodiscard]] std::uint64_t read_err() noexcept;
  void add(std::uint64_t n) noexcept { value_.fetch_add(n, std::memory_order_acq_rel); }
  void set(std::uint64_t n) noexcept { value_.store(n, std::memory_order_release); }
  void set_err(std::uint64_t n) noexcept {
    errors_.store(n, std::memory_order_release);
    seen_err_.store(n, std::memory_order_release);
  }
  // ok once the count reaches threshold; timed_out; error_available when the
  // error count changed since the application last read or set it.
  [[nodiscard]] errc wait(std::uint64_t threshold, int timeout_ms) noexcept;

 private:
  std::atomic<std::uint64_t> value_{0}, errors_{0}, seen_err_{0};
};

}  // namespace weft::spi
