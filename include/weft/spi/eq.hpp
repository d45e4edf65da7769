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
    posted();
  }
  // ok (an event), again (none), or a later error entry is just an event of kind error.
  [[nodiscard]] errc read(eq_event& out);
  [[nodiscard]] errc wait(eq_event& out, int timeout_ms);
  // for providers pushing from their progress (the lock is held there)
  void push_locked(eq_event e) { push(std::move(e)); }
  // How this queue's waits slept (room_returns is 0).
  [[nodiscard]] sleep_stats wait_stats() const noexcept { return wake_stats(); }

 private:
  std::deque<eq_event> q_;
};

}  // namespace spi
}  // namespace weft
