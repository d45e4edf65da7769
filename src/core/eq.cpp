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
  // Sleeps on the sources' doorbells (or descriptor) and on posted_, their
  // values taken before the check: an event pushed meanwhile by another
  // thread (its progress of a bound endpoint) ends the sleep. The pulse is
  // asked for only while a source's liveness checks have peers to watch
  // (needs_liveness()): their deaths come from those checks, not a word.
  armed a;
  errc e = errc::again;
  begin_sleeps();
  for (;;) {
    // With automatic progress the domain's thread takes the descriptor's
    // events and pushes what they make here: the wait sleeps on posted_
    // instead of polling it (arm_all()), and that thread runs the liveness
    // checks. A descriptor (tcp, manual progress) is polled: this wait is the
    // one that drives its sources; a push() from another thread ends it too.
    arm_all(a, false, true, true);
    if (lock_in_use()) a.pulse = false;
    {
      auto g = guard();  // the domain's lock first, as progress() takes it
      auto h = hold();  // an endpoint closed by another thread is never driven while it goes
      e = read(out);
    }
    if (e == errc::again && util::now_ns() < deadline) (void)sleep_armed(a, deadline);
    disarm_all();
    if (e != errc::again) break;
    if (util::now_ns() >= deadline) {
      auto g = guard();
      auto h = hold();
      e = read(out);
      if (e == errc::again) e = errc::timed_out;
      break;
    }
  }
  end_sleeps();
  return e;
}

}  // namespace weft::spi
