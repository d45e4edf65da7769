#include "weft/spi/cq.hpp"

#include <poll.h>

#include <algorithm>
#include <cstdlib>

#include "util/clock.hpp"
#include "util/futex.hpp"

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
}

void cq::push_error(const cq_err_entry& e) noexcept {
  errs_[(ehead_ + ecount_) % cap_] = e;
  ++ecount_;
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

errc cq::wait(std::span<cq_entry> out, std::size_t& n, int timeout_ms) noexcept {
  const std::uint64_t start = util::now_ns();
  const std::uint64_t deadline =
      timeout_ms < 0 ? ~0ull : start + static_cast<std::uint64_t>(timeout_ms) * 1000000ull;
  const std::uint64_t spin_until = std::min(deadline, start + spin_ns());
  for (;;) {
    errc e = read(out, n);
    if (e != errc::again) return e;
    if (util::now_ns() >= spin_until) break;
  }
  for (;;) {
    std::atomic<std::uint32_t>* word = nullptr;
    for (auto* s : sources_) {
      auto* w = s->arm();
      if (!word) word = w;
    }
    const std::uint32_t seen = word ? word->load(std::memory_order_seq_cst) : 0;
    errc e = read(out, n);
    const std::uint64_t now = util::now_ns();
    if (e == errc::again && now < deadline) {
      // Sleep in slices: one doorbell per CQ, and dead-peer checks need a pulse.
      std::uint64_t left_ms = (deadline - now) / 1000000ull;
      int slice = static_cast<int>(std::clamp<std::uint64_t>(left_ms, 1, 10));
      if (word) util::futex_wait(word, seen, sources_.size() > 1 ? 1 : slice);
      else sleep_slice(sources_.size() > 1 ? 1 : slice);
    }
    for (auto* s : sources_) s->disarm();
    if (e != errc::again) return e;
    if (now >= deadline) {
      e = read(out, n);
      return e == errc::again ? errc::timed_out : e;
    }
  }
}

}  // namespace weft::spi
