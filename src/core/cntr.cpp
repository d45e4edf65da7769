#include "weft/spi/cntr.hpp"

#include <algorithm>
#include <iterator>

#include "util/clock.hpp"

namespace weft::spi {

std::uint64_t cntr::read() noexcept {
  progress();
  return value_.load(std::memory_order_acquire);
}

std::uint64_t cntr::read_error() noexcept {
  progress();
  const std::uint64_t e = errors_.load(std::memory_order_acquire);
  seen_err_.store(e, std::memory_order_release);
  return e;
}

errc cntr::wait(std::uint64_t threshold, int timeout_ms) noexcept {
  const std::uint64_t start = util::now_ns();
  const std::uint64_t deadline =
      timeout_ms < 0 ? ~0ull : start + static_cast<std::uint64_t>(timeout_ms) * 1000000ull;
  auto check = [&]() noexcept {
    {
      auto g = guard();  // the domain's lock first, as progress() takes it
      auto h = hold();  // an endpoint closed by another thread is never driven while it goes
      progress();
    }
    if (value_.load(std::memory_order_acquire) >= threshold) return errc::ok;
    if (errors_.load(std::memory_order_acquire) != seen_err_.load(std::memory_order_acquire))
      return errc::error_available;
    return errc::again;
  };
  for (;;) {  // spin briefly
    const errc e = check();
    if (e != errc::again) return e;
    const std::uint64_t now = util::now_ns();
    if (now >= deadline) return errc::timed_out;
    if (now - start > 50'000) break;
  }
  // Then sleep on the sources' doorbells (or descriptor), as a CQ wait does:
  // the words' values are taken before the check, so no wake-up is lost.
  // posted_ too: add() and set() from another thread end the sleep, and
  // with automatic progress it stands for the descriptor the domain's thread
  // drains (arm_all()).
  armed a;
  begin_sleeps();
  errc e = errc::again;
  for (;;) {
    arm_all(a, false, false, true);
    e = check();
    if (e == errc::again) {
      (void)sleep_armed(a, deadline);
    }
    disarm_all();
    if (e != errc::again) break;
    if (util::now_ns() >= deadline) {
      e = check();
      if (e == errc::again) e = errc::timed_out;
      break;
    }
  }
  end_sleeps();
  return e;
}

result<bool> endpoint_counters::bind(const std::shared_ptr<cntr>& c, std::uint64_t flags) {
  if (!c) return make_error(errc::invalid_argument, "no counter to bind");
  const std::pair<std::uint64_t, std::shared_ptr<cntr>*> slots[] = {
      {flag::send, &send}, {flag::recv, &recv}, {flag::read, &read}, {flag::write, &write},
      {flag::remote_read, &remote_read}, {flag::remote_write, &remote_write}};
  static_assert(std::size(slots) == kinds);
  bool any = false;
  for (auto& [f, slot] : slots) {
    if (!(flags & f)) continue;
    any = true;
    if (*slot) return make_error(errc::bad_state, "a counter is already bound for that kind");
  }
  if (!any)
    return make_error(errc::invalid_argument,
                      "bind a counter for send, recv, read, write, remote_read or remote_write events");
  const auto mine = distinct();
  const bool fresh = std::find(mine.begin(), mine.end(), c.get()) == mine.end();
  for (auto& [f, slot] : slots)
    if (flags & f) *slot = c;
  return fresh;
}

std::vector<cntr*> endpoint_counters::distinct() const {
  std::vector<cntr*> v;
  for (cntr* c : {send.get(), recv.get(), read.get(), write.get(), remote_read.get(), remote_write.get()})
    if (c && std::find(v.begin(), v.end(), c) == v.end()) v.push_back(c);
  return v;
}

}  // namespace weft::spi
