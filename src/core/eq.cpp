#include "weft/spi/eq.hpp"

#include <poll.h>

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
  for (;;) {
    errc e = read(out);
    if (e != errc::again) return e;
    const std::uint64_t now = util::now_ns();
    if (now >= deadline) return errc::timed_out;
    sleep_slice(static_cast<int>(std::min<std::uint64_t>((deadline - now) / 1000000ull + 1, 10)));
  }
}

}  // namespace weft::spi
