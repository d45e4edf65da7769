#include "weft/spi/cq.hpp"

#include <algorithm>
#include <cstdlib>

#include "util/clock.hpp"

namespace weft::spi {

namespace {
std::uint64_t spin_ns() {
  static const std::uint64_t v = [] {
    const char* s = std::getenv("WEFT_SPIN_US");
    return (s ? std::strtoull(s, nullptr, 10) : 50ull) * 1000ull;
  }();
  return v;
}
}  // namespace

cq::cq(std::size_t size) : cap_(size ? size : 1), credits_(cap_), ring_(cap_), errs_(cap_) {}

void cq::push(const cq_entry& e) noexcept {
  ring_[(head_ + count_) % cap_] = e;
  ++count_;
  if (lock_in_use()) posted();  // automatic progress: a wait sleeps on posted_ (arm_all())
}

void cq::push_error(const cq_err_entry& e) noexcept {
  errs_[(ehead_ + ecount_) % cap_] = e;
  ++ecount_;
  if (lock_in_use()) posted();
}

errc cq::pop(std::span<cq_entry> out, std::size_t& n) noexcept {
  n = 0;
  if (ecount_) return errc::error_available;
  while (n < out.size() && count_) {
    out[n++] = ring_[head_];
    head_ = (head_ + 1) % cap_;
    --count_;
    ++credits_;
  }
  return n ? errc::ok : errc::again;
}

errc cq::read(std::span<cq_entry> out, std::size_t& n) noexcept {
  auto g = guard();
  if (count_ == 0 && ecount_ == 0) progress();
  return pop(out, n);
}

errc cq::read_error(cq_err_entry& out) noexcept {
  auto g = guard();
  if (ecount_ == 0) {
    progress();
    if (ecount_ == 0) return errc::again;
  }
  out = errs_[ehead_];
  ehead_ = (ehead_ + 1) % cap_;
  --ecount_;
  ++credits_;
  return errc::ok;
}

// A read inside a wait holds the sources' lock: an endpoint closed by
// another thread to end the wait is never driven while it goes.
errc cq::read_held(std::span<cq_entry> out, std::size_t& n) noexcept {
  auto g = guard();  // the domain's lock first, as progress() takes it: one order, no deadlock
  auto h = hold();
  return read(out, n);
}

errc cq::wait(std::span<cq_entry> out, std::size_t& n, int timeout_ms) noexcept {
  const std::uint32_t detached = detach_count();  // an endpoint closed meanwhile ends the wait (again)
  const std::uint64_t start = util::now_ns();
  const std::uint64_t deadline =
      timeout_ms < 0 ? ~0ull : start + static_cast<std::uint64_t>(timeout_ms) * 1000000ull;
  const std::uint64_t spin_until = std::min(deadline, start + spin_ns());
  for (;;) {
    errc e = read_held(out, n);
    if (e != errc::again) return e;
    // An endpoint closed while we spin ends the wait now, not after the spin.
    if (detach_count() != detached) return read_held(out, n);
    if (util::now_ns() >= spin_until) break;
  }
  // Then sleeps on every source's word at once (doorbells, and the room
  // words of peers that refused a post), until one changes, the deadline,
  // or the pulse that dead-peer checks need while operations are outstanding.
  armed a;
  begin_sleeps();
  struct ender {
    cq* q;
    ~ender() { q->end_sleeps(); }
  } end_sleeps_at_return{this};
  for (;;) {
    // The words' values first, then the checks below: no wake-up is lost.
    // With automatic progress, posted_ (bumped by push()) stands for the
    // descriptor the domain's thread drains (arm_all()).
    arm_all(a, true, false, lock_in_use());
    errc e = read_held(out, n);
    const std::uint64_t now = util::now_ns();
    if (e == errc::again && a.room) {
      disarm_all();
      room_returns_.fetch_add(1, std::memory_order_relaxed);
      return errc::again;  // room appeared at a busy peer: retry the post
    }
    // A detach between the start of the wait and arm_all() (while it spun,
    // or right after) is in the words' values already: it would not end the
    // sleep, which would last until the deadline. Seen here: no sleep, again.
    if (e == errc::again && now < deadline && a.detach_seen == detached) {
      (void)sleep_armed(a, deadline);
    }
    disarm_all();
    if (e != errc::again) return e;
    if (detach_count() != detached) {
      e = read_held(out, n);
      return e;  // again: an endpoint bound here was closed while we waited
    }
    if (now >= deadline) {
      e = read_held(out, n);
      return e == errc::again ? errc::timed_out : e;
    }
  }
}

}  // namespace weft::spi
