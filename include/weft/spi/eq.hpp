#pragma once
// Event queue for connection management (cf. fi_eq(3), fi_cm(3)). Control
// path: events own their data. Reading it drives the progress of the objects
// bound to it.
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "weft/event.hpp"
#include "weft/info.hpp"
#include "weft/spi/cq.hpp"

namespace weft {

namespace spi {

class eq : public progress_group {
 public:
  // From any thread (a source's progress, driven by whoever reads its CQ):
  // a wait asleep on this queue wakes (posted_).
  void push(eq_event e) {
    {
      auto g = guard();
      q_.push_back(std::move(e));
    }
    posted_.fetch_add(1, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst)) util_wake();
  }
  // ok (an event), again (none), or a later error entry is just an event of kind error.
  [[nodiscard]] errc read(eq_event& out);
  [[nodiscard]] errc wait(eq_event& out, int timeout_ms);
  // for providers pushing from their progress (the lock is held there)
  void push_locked(eq_event e) { push(std::move(e)); }
  // How this queue's waits slept (room_returns is 0).
  [[nodiscard]] sleep_stats wait_stats() const noexcept { return wake_stats(); }

 private:
  void util_wake() noexcept;  // futex wake of every waiter on posted_
  std::deque<eq_event> q_;
  // Bumped by every push: a wait sleeps on it (with its sources' words), so
  // an event pushed by another thread ends the sleep.
  std::atomic<std::uint32_t> posted_{0};
  std::atomic<std::uint32_t> sleepers_{0};
};

}  // namespace spi
}  // namespace weft
