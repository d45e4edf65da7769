#include "weft/spi/eq.hpp"

#include <poll.h>

#include <algorithm>

#include "util/clock.hpp"

namespace weft::spi {

void eq::attach(progressable* p) {
  if (std::find(sources_.begin(), sources_.end(), p) == sources_.end()) sources_.push_back(p);
}

void eq::detach(progressable* p) noexcept { std::erase(sources_, p); }

void eq::progress() noexcept {
  if (in_progress_) return;
  in_progress_ = true;
  for (std::size_t i = 0; i < sources_.size(); ++i) sources_[i]->progress();
  in_progress_ = false;
}

errc eq::read(eq_event& out) {
  auto g = lock_ ? std::unique_lock<std::recursive_mutex>(*lock_) : std::unique_lock<std::recursive_mutex>();
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
    const int fd = sources_.empty() ? -1 : sources_.front()->wait_fd();
    const int slice = static_cast<int>(std::min<std::uint64_t>((deadline - now) / 1000000ull + 1, 10));
    if (fd >= 0) {
      pollfd p{fd, POLLIN, 0};
      (void)::poll(&p, 1, slice);
    } else {
      timespec ts{0, 200000};
      nanosleep(&ts, nullptr);
    }
  }
}

}  // namespace weft::spi
