#include "weft/spi/eq.hpp"

#include <algorithm>

#include "util/clock.hpp"

namespace weft::spi {

errc eq::read(eq_event& out) {
  auto g = guard();
  if (q_.empty()) progress();
  if (q_.empty()) return errc::again;
  out = std::move(q_.front());
  q_.pop_front();
  return errc::ok;
}

errc eq::wait(eq_event& out, int timeout_ms) {
  const std::uint64_t deadline =
      timeout_ms < 0 ? ~0ull : util::now_ns() + static_cast<std::uint64_t>(timeout_ms) * 1000000ull;
  // Sleeps on the sources' doorbells (or descriptor), their values taken
  // before the check. Events such as peer_dead come from liveness checks,
  // which need the pulse: it stays on.
  armed a;
  for (;;) {
    arm_all(a, false);
    a.pulse = true;
    errc e;
    {
      auto g = guard();  // the domain's lock first, as progress() takes it
      auto h = hold();  // an endpoint closed by another thread is never driven while it goes
      e = read(out);
    }
    if (e == errc::again && util::now_ns() < deadline) (void)sleep_armed(a, deadline);
    disarm_all();
    if (e != errc::again) return e;
    if (util::now_ns() >= deadline) {
      auto g = guard();
      auto h = hold();
      e = read(out);
      return e == errc::again ? errc::timed_out : e;
    }
  }
}

}  // namespace weft::spi
